// Command lockd is the scsync edit-lock service: a stateless HTTP front to
// Redis; run two or more replicas over one Redis.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/lockd/internal/app"
	"github.com/scsync/scsync/lockd/internal/config"
	"github.com/scsync/scsync/shared/buildinfo"
	"github.com/scsync/scsync/shared/telemetry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lockd:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", os.Getenv(config.EnvPrefix+"_CONFIG"), "YAML config file (env "+config.EnvPrefix+"_CONFIG)")
	listen := flag.String("listen", "", "HTTP listen address (overrides config)")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Println(buildinfo.Read().String("lockd"))
		return nil
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	log, err := telemetry.NewLogger(os.Stderr, cfg.Log.Format, cfg.Log.Level, "lockd")
	if err != nil {
		return err
	}
	redis.SetLogger(app.RedisLogger(log))
	app.SetGCPercent()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return app.Run(ctx, cfg, log, nil)
}
