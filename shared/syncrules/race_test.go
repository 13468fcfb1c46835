//go:build race

package syncrules_test

// raceEnabled: the race detector makes the model about 30 times slower, so
// `make test` (-race) runs fewer histories per policy.
const raceEnabled = true
