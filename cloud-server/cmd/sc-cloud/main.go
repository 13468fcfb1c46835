// Command sc-cloud is one node of the scsync cloud: it accepts clinics'
// changes, serves the cloud REST API and sends accepted changes down.
// `sc-cloud admin ...` is the operator's CLI over the admin API instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/scsync/scsync/cloud-server/internal/admincli"
	"github.com/scsync/scsync/cloud-server/internal/app"
	"github.com/scsync/scsync/cloud-server/internal/config"
	"github.com/scsync/scsync/shared/buildinfo"
	"github.com/scsync/scsync/shared/telemetry"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "admin" {
		// The operator's CLI over the admin API (internal/admincli).
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		code := admincli.Run(ctx, os.Args[2:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sc-cloud:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", os.Getenv(config.EnvPrefix+"_CONFIG"), "YAML config file (env "+config.EnvPrefix+"_CONFIG)")
	listen := flag.String("listen", "", "HTTP listen address (overrides config)")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Println(buildinfo.Read().String("sc-cloud"))
		return nil
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	log, err := telemetry.NewLogger(os.Stderr, cfg.Log.Format, cfg.Log.Level, "sc-cloud")
	if err != nil {
		return err
	}
	app.SetGCPercent()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return app.Run(ctx, cfg, log, nil)
}
