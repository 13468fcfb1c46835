package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestSetGC: the server's GC percent and soft memory limit apply unless
// the environment sets its own (GOGC, GOMEMLIMIT), which the runtime read
// at start and setGC leaves in force. Not parallel: it changes the
// process's GC settings and environment.
func TestSetGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	for _, c := range []struct {
		gogc, gomemlimit string
		running          int   // the percent in force before: what the runtime made of GOGC
		runningLimit     int64 // and of GOMEMLIMIT
		wantPct          int
		wantLimit        int64
	}{
		{"", "", 100, math.MaxInt64, gcPercent, memoryLimit},
		{"150", "", 150, math.MaxInt64, 150, memoryLimit},
		{"", "1GiB", 100, 1 << 30, gcPercent, 1 << 30},
		{"off", "64MiB", -1, 64 << 20, -1, 64 << 20},
	} {
		t.Setenv("GOGC", c.gogc)
		t.Setenv("GOMEMLIMIT", c.gomemlimit)
		debug.SetGCPercent(c.running)
		debug.SetMemoryLimit(c.runningLimit)
		setGC()
		if got := debug.SetGCPercent(100); got != c.wantPct {
			t.Errorf("GOGC=%q: GC percent after setGC() = %d, want %d", c.gogc, got, c.wantPct)
		}
		if got := debug.SetMemoryLimit(-1); got != c.wantLimit {
			t.Errorf("GOMEMLIMIT=%q: memory limit after setGC() = %d, want %d", c.gomemlimit, got, c.wantLimit)
		}
	}
}
