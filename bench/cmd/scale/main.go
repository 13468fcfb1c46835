// Command scale is one benchmark of `make bench`: see `go run ./bench/cmd/scale -h`.
package main

import (
	"os"

	"github.com/scsync/scsync/bench/internal/suite"
)

func main() { os.Exit(suite.Main(suite.Scale)) }
