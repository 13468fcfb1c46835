// Command sc-local is the scsync clinic server: it keeps the clinic's records
// in SQLite, serves the clinic's viewers, and replicates with the cloud.
// Its subcommands (status, watch, backfill, scope, import, verify, backup,
// restore, users, audit, doctor, enroll, service) are built with
// github.com/spf13/cobra in commands.go; `sc-local COMMAND --help` explains
// each one, `sc-local --version` prints the version.
//
// Commands that talk to the running server authenticate with the machine's
// API token (auth.api_token, or <data_dir>/api-token, mode 0600), over https
// when the listener serves TLS (trusting its own tls.cert_file).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sc-local:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	root.SetArgs(longFlags(root, args))
	return root.ExecuteContext(ctx)
}
