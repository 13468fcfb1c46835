package gcpercent

import (
	"runtime/debug"
	"testing"
)

// TestApply: the default applies unless GOGC is set, whose percent (which
// the runtime read at start) stays. Not parallel: it changes the process's
// GC percent and environment.
func TestApply(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, c := range []struct {
		gogc    string
		running int // the percent in force before: what the runtime made of GOGC
		want    int
	}{
		{"", 100, 300},
		{"150", 150, 150},
		{"off", -1, -1},
	} {
		t.Setenv("GOGC", c.gogc)
		debug.SetGCPercent(c.running)
		if got := Apply(300); got != c.want {
			t.Errorf("GOGC=%q: Apply(300) = %d, want %d", c.gogc, got, c.want)
		}
		if got := debug.SetGCPercent(100); got != c.want {
			t.Errorf("GOGC=%q: GC percent in force %d, want %d", c.gogc, got, c.want)
		}
	}
}
