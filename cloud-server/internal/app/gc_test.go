package app

import (
	"runtime/debug"
	"testing"
)

// TestSetGCPercent: sc-cloud collects at GCPercent unless GOGC is set,
// whose percent (which the runtime read at start) it leaves alone. Not
// parallel: it changes the process's GC percent and environment.
func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, c := range []struct {
		gogc    string
		running int // the percent in force before: what the runtime made of GOGC
		want    int
	}{
		{"", 100, GCPercent},
		{"150", 150, 150},
		{"off", -1, -1},
	} {
		t.Setenv("GOGC", c.gogc)
		debug.SetGCPercent(c.running)
		if got := SetGCPercent(); got != c.want {
			t.Errorf("GOGC=%q: SetGCPercent() = %d, want %d", c.gogc, got, c.want)
		}
		if got := debug.SetGCPercent(100); got != c.want {
			t.Errorf("GOGC=%q: GC percent in force %d, want %d", c.gogc, got, c.want)
		}
	}
}
