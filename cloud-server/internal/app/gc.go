package app

import "github.com/scsync/scsync/shared/gcpercent"

// GCPercent is sc-cloud's GOGC when the environment sets none. A node
// keeps little live (7–9 MB while it accepts a clinic's 5,000 creates in
// the replication benchmark), so at Go's default of 100 its heap goal
// stayed near 15 MB and it collected about 12 times a second, the
// collector and the scavenger about a fifth of its CPU. At 200 it
// collects a third as often: 14–18% less of sc-cloud's CPU in that
// benchmark (docs/performance.md), for a heap goal of three times the live
// heap instead of two. (lockd, which keeps about 1 MB, runs at 400.)
const GCPercent = 200

// SetGCPercent applies GCPercent unless GOGC is set. It returns the
// percent in force.
func SetGCPercent() int { return gcpercent.Apply(GCPercent) }
