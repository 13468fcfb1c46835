// Command all runs every benchmark of `make bench` in sequence with the
// sizes that fit its 15-minute budget on a 2-core machine, prints the table
// and writes bench/results.json (-json).
package main

import (
	"os"

	"github.com/scsync/scsync/bench/internal/suite"
)

func main() { os.Exit(suite.MainAll()) }
