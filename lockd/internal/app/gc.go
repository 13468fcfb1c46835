package app

import "github.com/scsync/scsync/shared/gcpercent"

// GCPercent is lockd's GOGC when the environment sets none. lockd keeps
// about 1 MB live, so at Go's default of 100 its heap goal is the 4 MB
// floor, and under a few thousand lock calls a second it collected about
// 20 times a second: each cycle wakes the runtime's other threads, which on
// a small virtual machine costs more than the collection itself. At 400 the
// floor is 16 MB and it collects a quarter as often; lockd's CPU per lock
// pair fell by 10-25% (docs/performance.md). lockd holds no state, so its
// heap stays near that floor whatever the load.
const GCPercent = 400

// SetGCPercent applies GCPercent unless GOGC is set. It returns the
// percent in force.
func SetGCPercent() int { return gcpercent.Apply(GCPercent) }
