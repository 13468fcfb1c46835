// Package admincli is `sc-cloud admin`: the operator's command line over the
// cloud's admin HTTP API (/v1/admin/...). It parses with the standard flag
// package, one FlagSet per subcommand, as sc-cloud's own main and sc-local
// do: no new dependency, and `--help` on every subcommand comes for free.
package admincli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Env names the settings the flags default to.
const (
	EnvURL   = "SC_CLOUD_ADMIN_URL"
	EnvToken = "SC_CLOUD_ADMIN_TOKEN"
)

// errUsage marks a usage error (already explained on stderr).
var errUsage = errors.New("usage")

// Run runs `sc-cloud admin args...` and returns the process exit code: 0 on
// success, 1 when the cloud refused or could not be reached, 2 on a usage
// error. getenv reads the environment (os.Getenv); stdin gives a new
// person's password when the environment does not.
func Run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := run(ctx, args, getenv, stdin, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintln(stderr, "sc-cloud admin:", err)
	return 1
}

const topUsage = `usage: sc-cloud admin clinics <command> [flags]
       sc-cloud admin users <command> --clinic ID [flags]

Clinics:
  list                          list the clinics
  add --name NAME               create a clinic now (prints its credentials once)
  enroll-token --name NAME      make a one-time enrollment token for clinic IT
  disable ID                    disable a clinic (all its credentials stop working)
  enable ID                     enable it again (prints fresh broker/lockd credentials)
  rotate ID [--what W]          rotate the clinic's API token (W: token, broker, lockd)
  policy ID [POLICY]            show or set the conflict policy (local-wins, cloud-wins, keep-both)
  retention ID [MODE]           show or set file retention (keep, delete, backup; --after-days N)

People of a clinic (the first admin of a clinic is made here):
  list                          list the clinic's people (role, status, second factor)
  add --username U --role R     create a person (viewer, editor, admin); the password is read
                                from ` + EnvPassword + ` or the first line of stdin
  disable USER                  disable a person (refused at once, sessions end)
  enable USER                   enable a person again
  reset-totp USER               remove a person's TOTP second factor (lost phone); sessions end
  (USER is a username or a person's id)

Every command takes --cloud URL (env ` + EnvURL + `), --token TOKEN
(env ` + EnvToken + `) and --json; run "sc-cloud admin <group> <command> --help".
`

// EnvPassword gives `users add` the new person's password (else stdin).
const EnvPassword = "SC_CLOUD_USER_PASSWORD"

type command struct {
	usage string // after "sc-cloud admin <group> "
	args  int    // positional arguments: exact count, or -1 for 1..2
	setup func(fs *flag.FlagSet) func(c *client, pos []string) (any, printer, error)
}

// printer writes the human form of a result.
type printer func(w io.Writer, v any) error

var groups = map[string]map[string]command{
	"clinics": {
		"list":         {usage: "list", args: 0, setup: listCmd},
		"add":          {usage: "add --name NAME [--policy POLICY]", args: 0, setup: addCmd},
		"enroll-token": {usage: "enroll-token --name NAME [--policy POLICY] [--ttl 72h]", args: 0, setup: enrollCmd},
		"disable":      {usage: "disable ID", args: 1, setup: postCmd("disable")},
		"enable":       {usage: "enable ID", args: 1, setup: postCmd("enable")},
		"rotate":       {usage: "rotate ID [--what token|broker|lockd]", args: 1, setup: rotateCmd},
		"policy":       {usage: "policy ID [local-wins|cloud-wins|keep-both]", args: -1, setup: policyCmd},
		"retention":    {usage: "retention ID [keep|delete|backup] [--after-days N]", args: -1, setup: retentionCmd},
	},
	"users": {
		"list":       {usage: "list --clinic ID", args: 0, setup: usersListCmd},
		"add":        {usage: "add --clinic ID --username USER --role viewer|editor|admin [--display-name NAME]", args: 0, setup: usersAddCmd},
		"disable":    {usage: "disable --clinic ID USER", args: 1, setup: usersSetCmd("disable")},
		"enable":     {usage: "enable --clinic ID USER", args: 1, setup: usersSetCmd("enable")},
		"reset-totp": {usage: "reset-totp --clinic ID USER", args: 1, setup: usersSetCmd("reset-totp")},
	},
}

func help(args []string) bool {
	return len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help"
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if help(args) {
		_, _ = fmt.Fprint(stderr, topUsage)
		if len(args) == 0 {
			return errUsage
		}
		return flag.ErrHelp
	}
	group, cmds := args[0], groups[args[0]]
	if cmds == nil {
		fmt.Fprintf(stderr, "sc-cloud admin: unknown command %q\n\n%s", args[0], topUsage)
		return errUsage
	}
	args = args[1:]
	if help(args) {
		_, _ = fmt.Fprint(stderr, topUsage)
		if len(args) == 0 {
			return errUsage
		}
		return flag.ErrHelp
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "sc-cloud admin %s: unknown command %q\n\n%s", group, args[0], topUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("sc-cloud admin "+group+" "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	cloud := fs.String("cloud", getenv(EnvURL), "cloud base URL, e.g. https://cloud.example (env "+EnvURL+")")
	token := fs.String("token", "", "admin token (env "+EnvToken+"; prefer the environment: flags show in ps)")
	asJSON := fs.Bool("json", false, "print the API's JSON answer instead of a table")
	do := cmd.setup(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sc-cloud admin %s %s\n\nFlags:\n", group, cmd.usage)
		fs.PrintDefaults()
	}
	pos, err := parse(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if (cmd.args >= 0 && len(pos) != cmd.args) || (cmd.args < 0 && (len(pos) < 1 || len(pos) > 2)) {
		fmt.Fprintf(stderr, "wrong number of arguments\n")
		fs.Usage()
		return errUsage
	}
	if *token == "" {
		*token = getenv(EnvToken)
	}
	if *cloud == "" || *token == "" {
		fmt.Fprintf(stderr, "the cloud URL and the admin token are required (--cloud/%s, --token/%s)\n", EnvURL, EnvToken)
		return errUsage
	}
	c := &client{ctx: ctx, base: strings.TrimRight(*cloud, "/"), token: *token, getenv: getenv, stdin: stdin}
	v, pr, err := do(c, pos)
	if errors.Is(err, errUsage) {
		fmt.Fprintln(stderr, strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		fs.Usage()
		return err
	}
	if err != nil {
		return err
	}
	if *asJSON || pr == nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return pr(stdout, v)
}

// parse parses flags anywhere among the positional arguments (the flag
// package stops at the first non-flag): `policy 42 --json` works too.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
