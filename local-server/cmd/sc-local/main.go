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
//	sc-local [-config file] scope     show what syncs
//	sc-local [-config file] scope set [-kinds k,…] [-modalities M,…] [-since DATE | -last-days N]
//	                                  change what syncs (no flags: everything)
//	sc-local [-config file] import FILE.ndjson
//	                                  bring in records from a previous system (one JSON record per line)
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
	"strings"
	"syscall"

	"github.com/scsync/scsync/local-server/internal/app"
	"github.com/scsync/scsync/local-server/internal/cli"
	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/telemetry"
	"github.com/scsync/scsync/shared/wire"
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
		fmt.Fprintf(flag.CommandLine.Output(), "usage: sc-local [-config file] [serve|status|watch|backfill|scope [set …]|import FILE|backup|restore [-force]|doctor|enroll -cloud URL -token TOKEN]\n\n")
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
	case "scope":
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		base := "http://" + cfg.Listen
		if flag.NArg() < 2 {
			return cli.Scope(ctx, os.Stdout, base)
		}
		if flag.Arg(1) != "set" {
			return fmt.Errorf("usage: sc-local scope [set -kinds … -modalities … -since DATE | -last-days N]")
		}
		fs := flag.NewFlagSet("scope set", flag.ContinueOnError)
		kinds := fs.String("kinds", "", "record kinds that sync, comma-separated (patient,study,image,…); empty: all")
		mods := fs.String("modalities", "", "image modalities that sync, comma-separated (PANO,CEPH,CBCT,INTRAORAL,PHOTO,SCAN,OTHER); empty: all")
		since := fs.String("since", "", "studies and images of this date (YYYY-MM-DD) or later")
		lastDays := fs.Int("last-days", 0, "studies and images of the last N days")
		if err := fs.Parse(flag.Args()[2:]); err != nil {
			return err
		}
		var sc store.Scope
		for _, k := range splitList(*kinds) {
			sc.Kinds = append(sc.Kinds, wire.Kind(k))
		}
		sc.Modalities, sc.Since, sc.LastDays = splitList(*mods), *since, *lastDays
		return cli.SetScope(ctx, os.Stdout, base, sc)
	case "backfill":
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		if flag.NArg() > 1 && flag.Arg(1) != "status" {
			return fmt.Errorf("usage: sc-local backfill [status]")
		}
		return cli.Backfill(ctx, os.Stdout, "http://"+cfg.Listen)
	case "import":
		if flag.NArg() != 2 {
			return fmt.Errorf("usage: sc-local import FILE.ndjson")
		}
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		return cli.Import(ctx, os.Stdout, "http://"+cfg.Listen, flag.Arg(1))
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

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
