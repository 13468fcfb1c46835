// Package gcpercent sets a server's garbage collection percent (GOGC) to
// its own default when the environment sets none.
package gcpercent

import (
	"os"
	"runtime/debug"
)

// Apply sets the GC percent to def unless GOGC is set, whose percent (read
// by the runtime at start) it leaves alone. It returns the percent in force.
func Apply(def int) int {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		p := debug.SetGCPercent(100) // read it back: there is no getter
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(def)
	return def
}
