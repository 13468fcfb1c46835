//go:build !race

package syncrules_test

const raceEnabled = false
