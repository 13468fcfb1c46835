package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/scsync/scsync/local-server/internal/app"
	"github.com/scsync/scsync/local-server/internal/cli"
	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/local-server/internal/service"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/buildinfo"
	"github.com/scsync/scsync/shared/telemetry"
	"github.com/scsync/scsync/shared/wire"
)

// globals holds the flags every command shares.
type globals struct {
	config string // -config
}

// configFile is the config file the command reads: -config, else
// SC_LOCAL_CONFIG (the flag's default), else on Windows
// %ProgramData%\scsync\sc-local.yaml when it exists (the MSI puts it there),
// so clinic IT can type `sc-local status`.
func (g *globals) configFile() string {
	if g.config == "" && runtime.GOOS == "windows" {
		if p := config.DefaultPaths(runtime.GOOS, os.Getenv).ConfigFile; fileExists(p) {
			return p
		}
	}
	return g.config
}

// local loads the config and sets the CLI's HTTP client up for the running
// server: it returns the server's URL (https with tls.cert_file set) and the
// machine's API token, which its requests carry. Without a token only
// doctor goes on (it says what is wrong).
func (g *globals) local(cmd *cobra.Command) (cfg config.Config, base, token string, err error) {
	if cfg, err = config.Load(g.configFile()); err != nil {
		return cfg, "", "", err
	}
	if token, err = cfg.APIToken(false); err != nil && cmd.Name() != "doctor" {
		return cfg, "", "", fmt.Errorf("the API token (start the server once, or set auth.api_token): %w", err)
	}
	base, err = cli.UseLocal(cfg, token)
	return cfg, base, token, err
}

// localRun makes a RunE for a command that talks to the running server.
func (g *globals) localRun(do func(cmd *cobra.Command, args []string, base string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		_, base, _, err := g.local(cmd)
		if err != nil {
			return err
		}
		return do(cmd, args, base)
	}
}

// serve runs the clinic server until the context ends.
func (g *globals) serve(cmd *cobra.Command, _ []string) error {
	cfg, err := config.Load(g.configFile())
	if err != nil {
		return err
	}
	log, err := telemetry.NewLogger(cmd.ErrOrStderr(), cfg.Log.Format, cfg.Log.Level, "sc-local")
	if err != nil {
		return err
	}
	setGC()
	return app.Run(cmd.Context(), cfg, log, nil)
}

const rootLong = `sc-local is the scsync clinic server: it keeps the clinic's records in
SQLite, serves the clinic's viewers, and replicates with the cloud. With no
command it runs the server (serve).

Commands that talk to the running server (status, watch, backfill, scope,
import, verify, backup, users, audit) read the same config as the server and
authenticate with the machine's API token (auth.api_token, or
<data_dir>/api-token), over https when the listener serves TLS.

On Windows the config is found in %ProgramData%\scsync\sc-local.yaml by
itself. Flags take one dash or two: -config FILE and --config FILE are the
same. Installing, enrolling, upgrading, backup and troubleshooting:
docs/clinic-it.md.`

// A double-click in Explorer runs the server in a console, as it always
// did, rather than cobra's "this is a command line tool" notice. Set once
// (a package variable: newRoot runs in parallel tests).
func init() { cobra.MousetrapHelpText = "" }

// newRoot builds sc-local's command tree. Nothing here reads the config:
// each command does when it runs, so --help works on a machine that has no
// config yet.
func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "sc-local",
		Short: "the scsync clinic server and its admin commands",
		Long:  rootLong,
		Example: `  sc-local -config /etc/scsync/sc-local.yaml            run the server
  sc-local -config /etc/scsync/sc-local.yaml status     the replication status
  sc-local COMMAND --help                               explains one command`,
		Version:       buildinfo.Read().String("sc-local"),
		RunE:          g.serve,
		SilenceErrors: true, // main prints them, once, as "sc-local: …"
		SilenceUsage:  true, // an error is not a reason to print the whole help
	}
	root.SuggestionsMinimumDistance = 2
	root.SetVersionTemplate("{{.Version}}\n")
	root.CompletionOptions.DisableDefaultCmd = true
	root.PersistentFlags().StringVar(&g.config, "config", os.Getenv(config.EnvPrefix+"_CONFIG"), "YAML config file (env "+config.EnvPrefix+"_CONFIG)")
	root.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		err := fmt.Errorf("unknown command %q (see `sc-local --help`)", args[0])
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			err = fmt.Errorf("unknown command %q; did you mean %s? (see `sc-local --help`)", args[0], strings.Join(s, " or "))
		}
		return err
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		// pflag reads an unknown -bogus as shorthand flags (-b -o …);
		// the Go flag package, which sc-local used before, named it.
		var notDefined *pflag.NotExistError
		if errors.As(err, &notDefined) && notDefined.GetSpecifiedShortnames() != "" {
			name, _, _ := strings.Cut(notDefined.GetSpecifiedShortnames(), "=")
			err = fmt.Errorf("unknown flag -%s", name)
		}
		return fmt.Errorf("%w (see `%s --help`)", err, c.CommandPath())
	})
	root.SetHelpCommand(helpCommand(root))
	root.AddCommand(
		&cobra.Command{
			Use:   "serve",
			Short: "run the clinic server (the default command)",
			Long: `Run the clinic server (the default command). It serves the clinic's viewers
and API on listen, and replicates with the cloud when it can reach it. It
stops cleanly on Ctrl-C or SIGTERM. On Linux the Debian package runs it
under systemd (deployments/systemd/sc-local.service); on Windows it runs as
a service (sc-local service --help).`,
			Example: `  sc-local -config /etc/scsync/sc-local.yaml serve`,
			Args:    cobra.NoArgs,
			RunE:    g.serve,
		},
		&cobra.Command{
			Use:   "status",
			Short: "print the running server's replication status",
			Long: `Print the running server's replication status: records synced and pending,
conflicts, the outbox, the checkpoint, the last contact with the cloud.`,
			Args: cobra.NoArgs,
			RunE: g.localRun(func(cmd *cobra.Command, _ []string, base string) error {
				return cli.Status(cmd.Context(), cmd.OutOrStdout(), base)
			}),
		},
		watchCommand(g),
		backfillCommand(g),
		scopeCommand(g),
		&cobra.Command{
			Use:   "import FILE.ndjson",
			Short: "bring in records from a previous system",
			Long: `Bring in records from a previous system: one JSON record per line. They are
backfilled to the cloud newest first (sc-local backfill -watch follows it).`,
			Example: `  sc-local import old-system.ndjson`,
			Args:    exactArgs(1),
			RunE: g.localRun(func(cmd *cobra.Command, args []string, base string) error {
				return cli.Import(cmd.Context(), cmd.OutOrStdout(), base, args[0])
			}),
		},
		verifyCommand(g),
		&cobra.Command{
			Use:   "backup",
			Short: "back the database up to the cloud now",
			Long: `Back the database up to the cloud now (it also runs every backup.every).
See docs/backup.md.`,
			Args: cobra.NoArgs,
			RunE: g.localRun(func(cmd *cobra.Command, _ []string, base string) error {
				return cli.Backup(cmd.Context(), cmd.OutOrStdout(), base)
			}),
		},
		restoreCommand(g),
		usersCommand(g),
		auditCommand(g),
		&cobra.Command{
			Use:   "doctor",
			Short: "check every dependency and say what is wrong",
			Long: `Check every dependency (cloud API and token, clock skew, S3, RabbitMQ, lockd,
disk) and say in plain words what is wrong.`,
			Example: `  sudo sc-local -config /etc/scsync/sc-local.yaml doctor`,
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, _, _, err := g.local(cmd)
				if err != nil {
					return err
				}
				return cli.Doctor(cmd.Context(), cmd.OutOrStdout(), cfg)
			},
		},
		enrollCommand(g),
		serviceCommand(g),
	)
	return root
}

func watchCommand(g *globals) *cobra.Command {
	var withTitles bool
	c := &cobra.Command{
		Use:   "watch",
		Short: "print live events (Editing by …, Saved, Changed, transfers…)",
		Long: `Print the running server's live events (Editing by …, Saved, Closed,
Changed, conflicts, transfers), one line each, until Ctrl-C. Each change is
shown once. Reconnects and resumes by itself.

Each line names the record's title as the viewer shows it (a patient's
name, a study's description, a file's name). Events do not carry it: watch
reads each record from the server once (and again after it changes), which
the audit log records as a read by "service" (the machine's API token).
-titles=false prints the record ids only and reads nothing.`,
		Example: `  sc-local watch
  watching ws://127.0.0.1:8080/v1/events (Ctrl-C stops)
  12:03:44  patient 383061948362752 "Kim Minji"  Editing by local (dr.kim)  v2.0
  12:04:02  patient 383061948362752 "Kim Minji"  Saved v2.1  by local (dr.kim)
  sc-local watch -titles=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, base, tok, err := g.local(cmd)
			if err != nil {
				return err
			}
			return cli.Watch(cmd.Context(), cmd.OutOrStdout(), base, tok, withTitles)
		},
	}
	c.Flags().BoolVar(&withTitles, "titles", true, "name each record's title (read from the server, audited); false: ids only")
	return c
}

func backfillCommand(g *globals) *cobra.Command {
	var watch bool
	c := &cobra.Command{
		Use:   "backfill [status]",
		Short: "show the backfill's progress (-watch: live)",
		Long: `Show how far the backfill (records the cloud does not have yet: a new
clinic's history, an import) has come: what is left, the rate, the time
still needed. -watch keeps printing it every 2 seconds until Ctrl-C.`,
		Example: `  sc-local backfill
  sc-local backfill -watch`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 || (len(args) == 1 && args[0] == "status") {
				return nil
			}
			return usageError(c)
		},
		RunE: g.localRun(func(cmd *cobra.Command, _ []string, base string) error {
			if watch {
				return cli.BackfillWatch(cmd.Context(), cmd.OutOrStdout(), base, 2*time.Second)
			}
			return cli.Backfill(cmd.Context(), cmd.OutOrStdout(), base)
		}),
	}
	c.Flags().BoolVar(&watch, "watch", false, "keep printing the progress every 2 seconds until Ctrl-C")
	return c
}

func scopeCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "scope",
		Short: "show what syncs (scope set: change it)",
		Long: `Show what syncs with the cloud: the record kinds, the image modalities, the
period. Narrowing it never removes what the cloud already has (those records
keep replicating). See docs/scope.md.`,
		Args: cobra.NoArgs,
		RunE: g.localRun(func(cmd *cobra.Command, _ []string, base string) error {
			return cli.Scope(cmd.Context(), cmd.OutOrStdout(), base)
		}),
	}
	var kinds, mods, since string
	var lastDays int
	set := &cobra.Command{
		Use:   "set",
		Short: "change what syncs (no flags: everything)",
		Long: `Change what syncs with the cloud. With no flags, everything syncs. Records
that come into scope are backfilled; narrowing never removes what the cloud
already has. See docs/scope.md.`,
		Example: `  sc-local scope set -modalities CBCT,PANO -last-days 30
  sc-local scope set -kinds patient,study -since 2024-01-01
  sc-local scope set                      everything`,
		Args: cobra.NoArgs,
		RunE: g.localRun(func(cmd *cobra.Command, _ []string, base string) error {
			var sc store.Scope
			for _, k := range splitList(kinds) {
				sc.Kinds = append(sc.Kinds, wire.Kind(k))
			}
			sc.Modalities, sc.Since, sc.LastDays = splitList(mods), since, lastDays
			return cli.SetScope(cmd.Context(), cmd.OutOrStdout(), base, sc)
		}),
	}
	set.Flags().StringVar(&kinds, "kinds", "", "record kinds that sync, comma-separated (patient,study,image,…); empty: all")
	set.Flags().StringVar(&mods, "modalities", "", "image modalities that sync, comma-separated (PANO,CEPH,CBCT,INTRAORAL,PHOTO,SCAN,OTHER); empty: all")
	set.Flags().StringVar(&since, "since", "", "studies and images of this date (YYYY-MM-DD) or later")
	set.Flags().IntVar(&lastDays, "last-days", 0, "studies and images of the last N days")
	c.AddCommand(set)
	return c
}

func verifyCommand(g *globals) *cobra.Command {
	var repair bool
	c := &cobra.Command{
		Use:   "verify",
		Short: "compare every record with the cloud, repair what differs",
		Long: `Compare every record with the cloud (anti-entropy over hashed ranges,
tombstones included) and print each difference; with --repair, repair what
differs through replication. See docs/verify.md.`,
		Example: `  sc-local verify
  sc-local verify --repair`,
		Args: cobra.NoArgs,
		RunE: g.localRun(func(cmd *cobra.Command, _ []string, base string) error {
			return cli.Verify(cmd.Context(), cmd.OutOrStdout(), base, repair)
		}),
	}
	c.Flags().BoolVar(&repair, "repair", false, "repair what differs through replication")
	return c
}

func restoreCommand(g *globals) *cobra.Command {
	var force bool
	var identity string
	c := &cobra.Command{
		Use:   "restore",
		Short: "rebuild a replaced machine's database from the newest backup",
		Long: `Rebuild a replaced machine's database from the newest backup in the cloud.
Stop sc-local first. Run as root, it gives the restored files to the owner
of data_dir (the service user). The audit trail continues from the cloud's
copy and records the restore; people log in again. See docs/backup.md.`,
		Example: `  sudo sc-local -config /etc/scsync/sc-local.yaml restore -identity /root/scsync-backup.key`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(g.configFile())
			if err != nil {
				return err
			}
			return cli.Restore(cmd.Context(), cmd.OutOrStdout(), cfg, identity, force)
		},
	}
	c.Flags().BoolVar(&force, "force", false, "move an existing database aside (kept as a copy) instead of refusing")
	c.Flags().StringVar(&identity, "identity", "", "the backup recovery key (age identity file; default backup.identity_file)")
	return c
}

func usersCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "users",
		Short: "manage the people who log in to the clinic's viewers",
		Long: `Manage the people who log in to the clinic's viewers (their accounts
replicate to the cloud). A password is read from SC_LOCAL_PASSWORD or asked
on the terminal. See docs/security.md.`,
		Example: `  SC_LOCAL_PASSWORD=… sc-local users add -username admin -role admin -name "Clinic admin"
  sc-local users list
  sc-local users role dr.kim editor`,
		RunE: needSubcommand,
	}
	var username, role, name string
	add := &cobra.Command{
		Use:   "add",
		Short: "make a person's account",
		Long: `Make a person's account. The password is read from SC_LOCAL_PASSWORD or
asked on the terminal.`,
		Example: `  sc-local users add -username dr.kim -role editor -name "Dr Kim"`,
		Args:    cobra.NoArgs,
		RunE: g.localRun(func(cmd *cobra.Command, _ []string, base string) error {
			pw, err := cli.Password(cmd.InOrStdin(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return cli.UsersAdd(cmd.Context(), cmd.OutOrStdout(), base, username, role, name, pw)
		}),
	}
	add.Flags().StringVar(&username, "username", "", "login name (a-z 0-9 . _ -)")
	add.Flags().StringVar(&role, "role", "", "viewer, editor or admin")
	add.Flags().StringVar(&name, "name", "", "display name")
	setter := func(use, short string, change func(args []string) map[string]any) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  exactArgs(strings.Count(use, " ")),
			RunE: g.localRun(func(cmd *cobra.Command, args []string, base string) error {
				return cli.UsersSet(cmd.Context(), cmd.OutOrStdout(), base, args[0], change(args))
			}),
		}
	}
	c.AddCommand(
		add,
		&cobra.Command{
			Use:   "list",
			Short: "list the accounts",
			Args:  cobra.NoArgs,
			RunE: g.localRun(func(cmd *cobra.Command, _ []string, base string) error {
				return cli.UsersList(cmd.Context(), cmd.OutOrStdout(), base)
			}),
		},
		setter("disable USERNAME", "stop a person from logging in (ends their sessions)", func([]string) map[string]any {
			return map[string]any{"disabled": true}
		}),
		setter("enable USERNAME", "let a disabled person log in again", func([]string) map[string]any {
			return map[string]any{"disabled": false}
		}),
		setter("role USERNAME ROLE", "change a person's role (viewer, editor or admin)", func(args []string) map[string]any {
			return map[string]any{"role": args[1]}
		}),
		&cobra.Command{
			Use:   "password USERNAME",
			Short: "set a person's password (from SC_LOCAL_PASSWORD or asked)",
			Args:  exactArgs(1),
			RunE: g.localRun(func(cmd *cobra.Command, args []string, base string) error {
				pw, err := cli.Password(cmd.InOrStdin(), cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				return cli.UsersSet(cmd.Context(), cmd.OutOrStdout(), base, args[0], map[string]any{"password": pw})
			}),
		},
	)
	return c
}

func auditCommand(g *globals) *cobra.Command {
	var after int64
	var asJSON, verify bool
	c := &cobra.Command{
		Use:   "audit",
		Short: "print the audit log, or verify its hash chain",
		Long: `Print the clinic's audit log (who read or changed what, when, from where),
or verify its hash chain. See docs/security.md.`,
		Example: `  sc-local audit -after 1200
  sc-local audit -json
  sc-local audit -verify`,
		Args: cobra.NoArgs,
		RunE: g.localRun(func(cmd *cobra.Command, _ []string, base string) error {
			return cli.Audit(cmd.Context(), cmd.OutOrStdout(), base, after, asJSON, verify)
		}),
	}
	c.Flags().Int64Var(&after, "after", 0, "entries after this sequence number")
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	c.Flags().BoolVar(&verify, "verify", false, "check the hash chain instead of printing")
	return c
}

func enrollCommand(g *globals) *cobra.Command {
	var cloud, token string
	c := &cobra.Command{
		Use:   "enroll",
		Short: "register with the cloud (one-time token), write the config",
		Long: `Register this clinic server with the cloud, using the one-time enrollment
token from the cloud operator, and write the clinic's id, node and token into
the -config file (created if missing; an existing file keeps its mode and
owner). See docs/clinic-it.md.`,
		Example: `  sudo sc-local -config /etc/scsync/sc-local.yaml enroll -cloud https://cloud.example.com -token sce_…`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cli.Enroll(cmd.Context(), cmd.OutOrStdout(), g.configFile(), cloud, token)
		},
	}
	c.Flags().StringVar(&cloud, "cloud", "", "the cloud's URL (https://cloud.example.com)")
	c.Flags().StringVar(&token, "token", "", "the one-time enrollment token from the cloud operator")
	return c
}

// serviceActions are the `sc-local service` subcommands.
var serviceActions = []struct {
	action service.Action
	short  string
}{
	{service.Install, "register the Windows service (automatic start) with the -config file"},
	{service.Uninstall, "stop and remove the service and its Event Log source"},
	{service.Start, "start the installed service"},
	{service.Stop, "stop the service"},
	{service.Run, "what the service manager runs; not for a console"},
	{service.Setup, "what the MSI runs after installing: config, access list, firewall rule"},
	{service.Cleanup, "what the MSI runs on uninstall: removes the firewall rule"},
}

func serviceCommand(g *globals) *cobra.Command {
	var name string
	// do parses as `service ARGS -name NAME` always did (service.Parse: the
	// action in any case, the name checked, the config made absolute) and
	// carries it out.
	do := func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			args = append(args, "-name", name)
		}
		o, err := service.Parse(args, g.configFile(), config.DefaultPaths(runtime.GOOS, os.Getenv).ConfigFile, filepath.Abs)
		if err != nil {
			return err
		}
		return service.Do(cmd.Context(), o, func(ctx context.Context, log *slog.Logger) error {
			cfg, err := config.Load(o.Config)
			if err != nil {
				log.Error("config not usable", "file", o.Config, "err", err)
				return err
			}
			setGC()
			return app.Run(ctx, cfg, log, nil)
		})
	}
	c := &cobra.Command{
		Use:   "service ACTION",
		Short: "run as a Windows service (Windows only)",
		Long:  service.Usage,
		Example: `  sc-local service install
  sc-local -config D:\scsync\b.yaml service install -name scsync-local-2
  sc-local service start`,
		// `service INSTALL` and unknown actions go to service.Parse, which
		// reads the action in any case and names the ones there are.
		RunE: do,
	}
	c.PersistentFlags().StringVar(&name, "name", service.Name, "service name (more than one sc-local on one machine)")
	for _, a := range serviceActions {
		action := string(a.action)
		c.AddCommand(&cobra.Command{
			Use:   action,
			Short: a.short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return do(cmd, []string{action})
			},
		})
	}
	return c
}

// helpCommand is `sc-local help [COMMAND…]`: cobra's own answers an unknown
// topic with the root's help and success; this one fails, naming it.
func helpCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "explain a command",
		RunE: func(_ *cobra.Command, args []string) error {
			c, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return fmt.Errorf("no help for %q (commands: %s)", strings.Join(args, " "), commandNames(root))
			}
			return c.Help()
		},
	}
}

// needSubcommand is the RunE of a command that only groups others: it
// fails, naming them.
func needSubcommand(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("say which: sc-local %s %s (see `%s --help`)", c.Name(), commandNames(c), c.CommandPath())
	}
	return fmt.Errorf("unknown command %q for %q (%s; see `%s --help`)", args[0], c.CommandPath(), commandNames(c), c.CommandPath())
}

// commandNames lists c's subcommands: "add|list|…".
func commandNames(c *cobra.Command) string {
	var names []string
	for _, s := range c.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	return strings.Join(names, "|")
}

// exactArgs accepts exactly n arguments and otherwise prints the usage line.
func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError(c)
		}
		return nil
	}
}

func usageError(c *cobra.Command) error {
	return fmt.Errorf("usage: %s (see `%s --help`)", c.UseLine(), c.CommandPath())
}

// longFlags rewrites the long flags given with one dash (-config FILE, the Go
// flag package's way, which scripts, the systemd unit and registered Windows
// services use: `-config X service run`) to two, as cobra reads them. Only
// the names of flags some command has are rewritten, never the value that
// follows one, and nothing after "--".
func longFlags(root *cobra.Command, args []string) []string {
	takesValue := map[string]bool{"help": false, "version": false}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) { takesValue[f.Name] = f.NoOptDefVal == "" })
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		out = append(out, a)
		if a == "--" {
			return append(out, args[i+1:]...)
		}
		if len(a) < 3 || a[0] != '-' {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		value, known := takesValue[name]
		if !known {
			continue
		}
		if a[1] != '-' {
			out[len(out)-1] = "-" + a
		}
		if value && !hasValue && i+1 < len(args) {
			i++
			out = append(out, args[i])
		}
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
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
