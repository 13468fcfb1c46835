// Command idle is one benchmark of `make bench`: see `go run ./bench/cmd/idle -h`.
package main

import (
	"os"

	"github.com/scsync/scsync/bench/internal/suite"
)

func main() { os.Exit(suite.Main(suite.Idle)) }
