package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/scsync/scsync/local-server/internal/service"
)

// TestMain lets the tests run this test binary as sc-local itself (its main,
// its exit code) when runMainEnv is set.
func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const runMainEnv = "SC_LOCAL_TEST_RUN_MAIN"

// scLocal runs sc-local with args and a config file that does not exist
// (a command that reads it fails, naming it) and returns its stdout, stderr
// and exit code.
func scLocal(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "SC_LOCAL_CONFIG="+filepath.Join(t.TempDir(), "missing.yaml"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run sc-local %q: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// commandPaths lists every command of the tree below c ("users add", …),
// without cobra's own help command.
func commandPaths(c *cobra.Command) [][]string {
	var out [][]string
	for _, s := range c.Commands() {
		if !s.IsAvailableCommand() {
			continue
		}
		out = append(out, []string{s.Name()})
		for _, p := range commandPaths(s) {
			out = append(out, append([]string{s.Name()}, p...))
		}
	}
	return out
}

// TestEveryCommandHasHelp: every command and nested command answers --help
// (and -h, -help, `help CMD`) with exit 0, before it reads the config, with
// a description and its own usage line.
func TestEveryCommandHasHelp(t *testing.T) {
	t.Parallel()
	paths := commandPaths(newRoot())
	if len(paths) < 20 {
		t.Fatalf("commandPaths = %d commands, want the whole tree", len(paths))
	}
	for _, p := range append(paths, nil) {
		name := strings.Join(append([]string{"sc-local"}, p...), " ")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			forms := [][]string{append(slices.Clone(p), "--help"), append(slices.Clone(p), "-h"), append(slices.Clone(p), "-help")}
			if len(p) > 0 {
				forms = append(forms, append([]string{"help"}, p...))
			}
			for _, args := range forms {
				out, errOut, code := scLocal(t, args...)
				if code != 0 || errOut != "" {
					t.Fatalf("sc-local %s = exit %d, stderr %q; want 0 and no error", strings.Join(args, " "), code, errOut)
				}
				if !strings.Contains(out, "Usage:\n  "+name) {
					t.Errorf("sc-local %s has no usage line for %q:\n%s", strings.Join(args, " "), name, out)
				}
			}
		})
	}
	for _, p := range paths {
		c, _, err := newRoot().Find(p)
		if err != nil {
			t.Fatal(err)
		}
		if c.Short == "" {
			t.Errorf("sc-local %s has no Short description", strings.Join(p, " "))
		}
	}
}

// TestFlags pins every command's flags and their defaults: scripts, the
// systemd unit, the MSI and registered Windows services use them.
func TestFlags(t *testing.T) {
	want := map[string]string{
		"":                  "config= version=false",
		"backfill":          "watch=false",
		"scope set":         "kinds= last-days=0 modalities= since=",
		"verify":            "repair=false",
		"restore":           "force=false identity=",
		"users add":         "name= role= username=",
		"audit":             "after=0 json=false verify=false",
		"enroll":            "cloud= token=",
		"service":           "name=" + service.Name,
		"service install":   "name=" + service.Name,
		"service run":       "name=" + service.Name,
		"users role":        "",
		"status":            "",
		"watch":             "titles=true",
		"import":            "",
		"backup":            "",
		"doctor":            "",
		"serve":             "",
		"scope":             "",
		"users list":        "",
		"service uninstall": "name=" + service.Name,
		"users password":    "",
		"users disable":     "",
		"users enable":      "",
		"service start":     "name=" + service.Name,
		"service stop":      "name=" + service.Name,
		"service setup":     "name=" + service.Name,
		"service cleanup":   "name=" + service.Name,
		"users":             "",
	}
	t.Setenv("SC_LOCAL_CONFIG", "")
	root := newRoot()
	root.InitDefaultHelpFlag()
	root.InitDefaultVersionFlag()
	got := map[string]string{}
	for _, p := range append(commandPaths(root), nil) {
		c, _, err := root.Find(p)
		if err != nil {
			t.Fatal(err)
		}
		var flags []string
		add := func(f *pflag.Flag) {
			if f.Name != "help" && (f.Name != "config" || c == root) {
				flags = append(flags, f.Name+"="+f.DefValue)
			}
		}
		c.LocalFlags().VisitAll(add)
		c.InheritedFlags().VisitAll(add)
		sort.Strings(flags)
		got[strings.Join(p, " ")] = strings.Join(flags, " ")
	}
	for cmd, flags := range got {
		w, ok := want[cmd]
		if !ok {
			t.Errorf("command %q (flags %q) is not pinned in TestFlags", cmd, flags)
			continue
		}
		if flags != w {
			t.Errorf("sc-local %s flags = %q, want %q", cmd, flags, w)
		}
	}
	for cmd := range want {
		if _, ok := got[cmd]; !ok {
			t.Errorf("command %q is gone", cmd)
		}
	}
}

// TestMistakesFail: an unknown command, flag or topic, or missing
// arguments, fail with exit 1 and say what is wrong; nothing is run.
func TestMistakesFail(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus" (see ` + "`sc-local --help`)"},
		{[]string{"stauts"}, `did you mean status?`},
		{[]string{"status", "extra"}, `unknown command "extra" for "sc-local status"`},
		{[]string{"users"}, "say which: sc-local users add|disable|enable|list|password|role"},
		{[]string{"users", "bogus"}, `unknown command "bogus" for "sc-local users"`},
		{[]string{"users", "role", "dr.kim"}, "usage: sc-local users role USERNAME ROLE"},
		{[]string{"scope", "bogus"}, `unknown command "bogus" for "sc-local scope"`},
		{[]string{"scope", "set", "-bogus"}, "unknown flag -bogus (see `sc-local scope set --help`)"},
		{[]string{"status", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"audit", "-after", "x"}, `invalid argument "x" for "--after"`},
		{[]string{"backfill", "later"}, "usage: sc-local backfill [status]"},
		{[]string{"import"}, "usage: sc-local import FILE.ndjson"},
		{[]string{"help", "nonsense"}, `no help for "nonsense"`},
		{[]string{"service"}, "say what to do"},
		{[]string{"service", "restart"}, `unknown action "restart"`},
		{[]string{"service", "install", "-name", "bad name"}, "letters, digits"},
	} {
		out, errOut, code := scLocal(t, tt.args...)
		if code != 1 || !strings.HasPrefix(errOut, "sc-local: ") || !strings.Contains(errOut, tt.want) {
			t.Errorf("sc-local %s = exit %d, stderr %q; want exit 1 and %q", strings.Join(tt.args, " "), code, errOut, tt.want)
		}
		if out != "" {
			t.Errorf("sc-local %s printed %q on stdout", strings.Join(tt.args, " "), out)
		}
	}
}

// TestCommandLines: the command lines in use before sc-local moved to cobra
// still reach the commands, one dash or two.
func TestCommandLines(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "other.yaml")
	for _, tt := range []struct {
		args []string
		code int
		want string // on stderr; stdout for exit 0
	}{
		{[]string{"--version"}, 0, "sc-local "},
		{[]string{"-version"}, 0, "sc-local "},
		{[]string{"-config", missing, "status"}, 1, missing},
		{[]string{"--config=" + missing, "doctor"}, 1, missing},
		{[]string{"status", "-config", missing}, 1, missing},
		{[]string{"-config", missing}, 1, missing},          // serve, the default
		{[]string{"-config", missing, "serve"}, 1, missing}, // the systemd unit
		{[]string{"-config", missing, "restore", "-identity", "k", "-force"}, 1, missing},
		// What a registered Windows service runs (service.RunArgs) parses
		// on every platform; off Windows there is no service manager.
		{service.RunArgs(service.Options{Config: missing, Name: "scsync-local-2"}), 1, "Windows services only"},
		{[]string{"service", "INSTALL"}, 1, "Windows services only"},
	} {
		out, errOut, code := scLocal(t, tt.args...)
		got := errOut
		if tt.code == 0 {
			got = out
		}
		if code != tt.code || !strings.Contains(got, tt.want) {
			t.Errorf("sc-local %s = exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(tt.args, " "), code, out, errOut, tt.code, tt.want)
		}
	}
	out, _, _ := scLocal(t, "--version")
	if !strings.HasPrefix(out, "sc-local ") || strings.Count(out, "\n") != 1 {
		t.Errorf("sc-local --version = %q, want one line, as buildinfo.String prints it", out)
	}
}

func TestLongFlags(t *testing.T) {
	t.Parallel()
	root := newRoot()
	for _, tt := range []struct{ in, want []string }{
		{[]string{"-config", "f", "status"}, []string{"--config", "f", "status"}},
		{[]string{"-config=f", "backfill", "-watch"}, []string{"--config=f", "backfill", "--watch"}},
		{[]string{"--config", "-watch", "backfill"}, []string{"--config", "-watch", "backfill"}},
		{[]string{"scope", "set", "-last-days", "-5"}, []string{"scope", "set", "--last-days", "-5"}},
		{[]string{"users", "add", "-name", "-json"}, []string{"users", "add", "--name", "-json"}},
		{[]string{"import", "--", "-watch"}, []string{"import", "--", "-watch"}},
		{[]string{"-h", "-help", "-version", "-bogus", "x"}, []string{"-h", "--help", "--version", "-bogus", "x"}},
	} {
		if got := longFlags(root, tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("longFlags(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
