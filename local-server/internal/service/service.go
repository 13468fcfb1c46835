// Package service runs sc-local as a Windows service and installs it:
// `sc-local service install|uninstall|start|stop|run`. The argument handling
// and the default paths are plain Go and tested on every platform; the
// service manager and Event Log calls (golang.org/x/sys/windows/svc, svc/mgr,
// svc/eventlog) are built on Windows only. On Linux sc-local runs under
// systemd (deployments/systemd/sc-local.service) and `service` says so.
package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Name is the Windows service name (and Event Log source).
const Name = "scsync-local"

// DisplayName and Description are what the Services console shows.
const (
	DisplayName = "scsync clinic server"
	Description = "Keeps the clinic's records and replicates them with the scsync cloud (sc-local)."
)

// ErrUsage is returned for a command line that is not understood.
var ErrUsage = errors.New("service: usage")

// ErrNotWindows is returned by the actions that need the Windows service manager.
var ErrNotWindows = errors.New("service: Windows services only; on Linux run sc-local under systemd (deployments/systemd/sc-local.service, or the Debian package)")

// Action is what `sc-local service ACTION` asks for.
type Action string

// The actions.
const (
	Install   Action = "install"
	Uninstall Action = "uninstall"
	Start     Action = "start"
	Stop      Action = "stop"
	Run       Action = "run" // what the service manager starts
	// Setup and Cleanup are what the MSI runs after installing and before
	// removing the files: the config (a copy of the example if missing), an
	// access list on its directory, and the firewall rule.
	Setup   Action = "setup"
	Cleanup Action = "cleanup"
)

// Options of a service command.
type Options struct {
	Action Action
	// Config is the config file the service runs with (absolute; install
	// writes it into the service's command line).
	Config string
	// Name is the service name; "scsync-local" unless more than one
	// sc-local runs on the machine (each with its own data directory).
	Name string
}

// Usage is the help of `sc-local service`.
const Usage = `usage: sc-local [-config FILE] service install|uninstall|start|stop|run|setup|cleanup [-name NAME]

Windows only: run sc-local as a Windows service (started at boot, restarted
after a failure, logging to the Event Log under the service's name).
  install     register the service (as LocalSystem, automatic start) with
              the config file given by -config (default %ProgramData%\scsync\sc-local.yaml)
  uninstall   stop and remove the service and its Event Log source
  start, stop start or stop the installed service
  run         what the service manager runs; not for a console
  setup       what the MSI runs: writes the config from sc-local.example.yaml
              if missing, lets only SYSTEM and Administrators read its
              directory, adds the firewall rule "scsync clinic server"
  cleanup     what the MSI runs on uninstall: removes the firewall rule
  -name       service name (default scsync-local)
The MSI installs and starts the service by itself.`

// Parse reads `service` arguments (after the word "service"). config is the
// global -config value (may be empty); defaultConfig is used when it is, and
// abs makes a path absolute (filepath.Abs; a parameter so tests can run
// Windows paths on Linux).
func Parse(args []string, config, defaultConfig string, abs func(string) (string, error)) (Options, error) {
	if len(args) == 0 {
		return Options{}, fmt.Errorf("%w: say what to do: install, uninstall, start, stop or run", ErrUsage)
	}
	o := Options{Action: Action(strings.ToLower(args[0])), Name: Name}
	switch o.Action {
	case Install, Uninstall, Start, Stop, Run, Setup, Cleanup:
	default:
		return Options{}, fmt.Errorf("%w: unknown action %q (install, uninstall, start, stop, run, setup, cleanup)", ErrUsage, args[0])
	}
	fs := flag.NewFlagSet("service "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("name", Name, "service name")
	if err := fs.Parse(args[1:]); err != nil {
		return Options{}, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return Options{}, fmt.Errorf("%w: unexpected %q", ErrUsage, fs.Arg(0))
	}
	if !validName(*name) {
		return Options{}, fmt.Errorf("%w: -name %q: letters, digits, '-' and '_' only, at most 80", ErrUsage, *name)
	}
	o.Name = *name
	if config == "" {
		config = defaultConfig
	}
	if o.Action == Install || o.Action == Run || o.Action == Setup {
		if config == "" {
			return Options{}, fmt.Errorf("%w: the service needs a config file: -config FILE", ErrUsage)
		}
		p, err := abs(config)
		if err != nil {
			return Options{}, fmt.Errorf("config path %s: %w", config, err)
		}
		o.Config = p
	}
	return o, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 80 {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// RunArgs is the command line the service manager starts sc-local with.
func RunArgs(o Options) []string {
	args := []string{"-config", o.Config, "service", "run"}
	if o.Name != Name {
		args = append(args, "-name", o.Name)
	}
	return args
}

// Runner runs the server until ctx ends; log is where it logs (the Event
// Log under the service manager).
type Runner func(ctx context.Context, log *slog.Logger) error
