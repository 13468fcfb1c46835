//go:build race

package e2e

// raceFlags builds the binaries under test as this test binary was built:
// with the race detector.
var raceFlags = []string{"-race"}
