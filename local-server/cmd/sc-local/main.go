// Command sc-local is the scsync clinic server: it keeps the clinic's records
// in SQLite, serves the clinic's viewers, and replicates with the cloud.
//
//	sc-local [-config file] [serve]   run the server (default)
//	sc-local [-config file] status    print the replication status
//	sc-local [-config file] watch     print live events (Editing, Saved, transfers…)
//	sc-local -config file enroll -cloud URL -token TOKEN
//	                                  register with the cloud (one-time token), write the config
//	sc-local [-config file] doctor    check every dependency and say what is wrong
//	sc-local [-config file] backfill  show the backfill's progress
//	sc-local [-config file] backup    back the database up to the cloud now
//	sc-local [-config file] restore [-force]
//	                                  rebuild a replaced machine's database from the newest backup
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/scsync/scsync/local-server/internal/app"
	"github.com/scsync/scsync/local-server/internal/cli"
	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/shared/telemetry"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sc-local:", err)
		os.Exit(1)
	}
}

func run() error {
	path := flag.String("config", os.Getenv(config.EnvPrefix+"_CONFIG"), "YAML config file (env "+config.EnvPrefix+"_CONFIG)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: sc-local [-config file] [serve|status|watch|backfill|backup|restore [-force]|doctor|enroll -cloud URL -token TOKEN]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	cmd := flag.Arg(0)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "", "serve":
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		log, err := telemetry.NewLogger(os.Stderr, cfg.Log.Format, cfg.Log.Level, "sc-local")
		if err != nil {
			return err
		}
		return app.Run(ctx, cfg, log, nil)
	case "status":
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		return cli.Status(ctx, os.Stdout, "http://"+cfg.Listen)
	case "watch":
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		return cli.Watch(ctx, os.Stdout, "http://"+cfg.Listen)
	case "backfill":
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		return cli.Backfill(ctx, os.Stdout, "http://"+cfg.Listen)
	case "backup":
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		return cli.Backup(ctx, os.Stdout, "http://"+cfg.Listen)
	case "restore":
		fs := flag.NewFlagSet("restore", flag.ContinueOnError)
		force := fs.Bool("force", false, "move an existing database aside (kept as a copy) instead of refusing")
		if err := fs.Parse(flag.Args()[1:]); err != nil {
			return err
		}
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		return cli.Restore(ctx, os.Stdout, cfg, *force)
	case "doctor":
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		return cli.Doctor(ctx, os.Stdout, cfg)
	case "enroll":
		fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
		cloud := fs.String("cloud", "", "the cloud's URL (https://cloud.example.com)")
		token := fs.String("token", "", "the one-time enrollment token from the cloud operator")
		if err := fs.Parse(flag.Args()[1:]); err != nil {
			return err
		}
		return cli.Enroll(ctx, os.Stdout, *path, *cloud, *token)
	default:
		flag.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
}
