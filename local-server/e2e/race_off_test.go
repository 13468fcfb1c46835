//go:build !race

package e2e

// raceFlags: this test binary runs without the race detector (no C
// compiler on the machine: `make test` then leaves -race out), so the
// binaries under test are built without it too.
var raceFlags []string
