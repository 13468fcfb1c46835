package main

import (
	"os"
	"runtime/debug"

	"github.com/scsync/scsync/shared/gcpercent"
)

// gcPercent is the server's GOGC when the environment sets none. While it
// takes the clinic's writes it keeps little live, so at Go's default of
// 100 it collected many times a second: the collector's mark workers were
// about 7% of its CPU in the replication benchmark. At 200, as sc-cloud
// runs, it used about 10% less CPU there, for about 7 MiB more at its peak
// and 0.3 MiB more idle (400 saved a few per cent more for three times the
// memory; docs/performance.md). memoryLimit is its soft memory limit
// (GOMEMLIMIT) when the environment sets none: the larger heap the percent
// allows is bounded there, so a large import or backfill collects as often
// as it must to stay within it.
const (
	gcPercent   = 200
	memoryLimit = 256 << 20
)

// setGC applies gcPercent and memoryLimit, each unless the environment
// sets its own (GOGC, GOMEMLIMIT), which the runtime read at start.
func setGC() {
	gcpercent.Apply(gcPercent)
	if v, ok := os.LookupEnv("GOMEMLIMIT"); !ok || v == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
}
