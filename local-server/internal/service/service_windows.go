//go:build windows

package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

// IsWindowsService reports whether the service manager started this process.
func IsWindowsService() bool {
	ok, err := svc.IsWindowsService()
	return err == nil && ok
}

// Do carries out o.
func Do(ctx context.Context, o Options, run Runner) error {
	switch o.Action {
	case Install:
		return install(o)
	case Uninstall:
		return uninstall(o.Name)
	case Start:
		return start(o.Name)
	case Stop:
		return stop(o.Name)
	case Run:
		return runService(o, run)
	case Setup:
		return setup(ctx, o)
	case Cleanup:
		_ = eventlog.Remove(o.Name)
		return cleanup(ctx)
	}
	return fmt.Errorf("%w: %q", ErrUsage, o.Action)
}

func install(o Options) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("service install: the service manager (run as Administrator): %w", err)
	}
	defer m.Disconnect() //nolint:errcheck // nothing to do about it
	if s, err := m.OpenService(o.Name); err == nil {
		_ = s.Close()
		return fmt.Errorf("service %s is already installed (sc-local service uninstall first)", o.Name)
	}
	s, err := m.CreateService(o.Name, exe, mgr.Config{
		DisplayName:      DisplayName,
		Description:      Description,
		StartType:        mgr.StartAutomatic,
		DelayedAutoStart: true, // after the network is up
	}, RunArgs(o)...)
	if err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	defer func() { _ = s.Close() }()
	if err := recovery(s); err != nil {
		return fmt.Errorf("service install: %w", err)
	}
	if err := eventSource(o.Name); err != nil {
		_ = s.Delete()
		return fmt.Errorf("service install: %w", err)
	}
	fmt.Printf("installed service %s (%s, automatic start) with config %s\n", o.Name, exe, o.Config)
	return nil
}

// recovery restarts the service after a failure: 5 s, 30 s, then every
// minute; the count resets after a day without failures. An exit with an
// error (not only a crash) counts as a failure too.
func recovery(s *mgr.Service) error {
	if err := s.SetRecoveryActions([]mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
		{Type: mgr.ServiceRestart, Delay: time.Minute},
	}, 24*60*60); err != nil {
		return fmt.Errorf("recovery actions: %w", err)
	}
	_ = s.SetRecoveryActionsOnNonCrashFailures(true)
	return nil
}

// eventSource registers the service's name as an Event Log source.
func eventSource(name string) error {
	err := eventlog.InstallAsEventCreate(name, eventlog.Error|eventlog.Warning|eventlog.Info)
	if err != nil && !strings.Contains(err.Error(), "exists") {
		return fmt.Errorf("event log source: %w", err)
	}
	return nil
}

func uninstall(name string) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("service uninstall: the service manager (run as Administrator): %w", err)
	}
	defer m.Disconnect() //nolint:errcheck // nothing to do about it
	s, err := m.OpenService(name)
	if err != nil {
		return fmt.Errorf("service %s is not installed", name)
	}
	defer func() { _ = s.Close() }()
	_ = stopService(s, 30*time.Second) // it may not run
	if err := s.Delete(); err != nil {
		return fmt.Errorf("service uninstall: %w", err)
	}
	_ = eventlog.Remove(name)
	fmt.Printf("removed service %s\n", name)
	return nil
}

func start(name string) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("service start: %w", err)
	}
	defer m.Disconnect() //nolint:errcheck // nothing to do about it
	s, err := m.OpenService(name)
	if err != nil {
		return fmt.Errorf("service %s is not installed", name)
	}
	defer func() { _ = s.Close() }()
	if err := s.Start(); err != nil {
		return fmt.Errorf("service start: %w", err)
	}
	fmt.Printf("started service %s\n", name)
	return nil
}

func stop(name string) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("service stop: %w", err)
	}
	defer m.Disconnect() //nolint:errcheck // nothing to do about it
	s, err := m.OpenService(name)
	if err != nil {
		return fmt.Errorf("service %s is not installed", name)
	}
	defer func() { _ = s.Close() }()
	if err := stopService(s, 60*time.Second); err != nil {
		return err
	}
	fmt.Printf("stopped service %s\n", name)
	return nil
}

func stopService(s *mgr.Service, wait time.Duration) error {
	st, err := s.Control(svc.Stop)
	if err != nil {
		return fmt.Errorf("service stop: %w", err)
	}
	deadline := time.Now().Add(wait)
	for st.State != svc.Stopped {
		if time.Now().After(deadline) {
			return errors.New("service stop: still running after " + wait.String())
		}
		time.Sleep(300 * time.Millisecond)
		if st, err = s.Query(); err != nil {
			return fmt.Errorf("service stop: %w", err)
		}
	}
	return nil
}

// runService is the service's main: it logs to the Event Log, runs the
// server, and turns Stop and Shutdown into a cancelled context.
func runService(o Options, run Runner) error {
	el, err := eventlog.Open(o.Name)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	defer func() { _ = el.Close() }()
	h := &handler{run: run, log: slog.New(&eventLogHandler{el: el, level: slog.LevelInfo})}
	if err := svc.Run(o.Name, h); err != nil {
		_ = el.Error(1, "sc-local service failed: "+err.Error())
		return err
	}
	return h.err
}

type handler struct {
	run Runner
	log *slog.Logger
	err error
}

func (h *handler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.run(ctx, h.log) }()
	status <- svc.Status{State: svc.Running, Accepts: accepts}
	for {
		select {
		case err := <-done:
			h.err = err
			if err != nil {
				h.log.Error("sc-local stopped with an error", "err", err)
				return true, 1 // a failure: the recovery actions restart it
			}
			return false, 0
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending, WaitHint: 30000}
				cancel()
				h.err = <-done
				return false, 0
			}
		}
	}
}

// eventLogHandler writes slog records to the Windows Event Log: the message
// and its attributes as one text line, Warn and Error at their levels.
type eventLogHandler struct {
	el    *eventlog.Log
	level slog.Level
	attrs []slog.Attr
	group string
	mu    sync.Mutex
}

func (e *eventLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= e.level }

func (e *eventLogHandler) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	th := slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
			return slog.Attr{}
		}
		return a
	}})
	hh := th.WithAttrs(e.attrs)
	if e.group != "" {
		hh = hh.WithGroup(e.group)
	}
	if err := hh.Handle(context.Background(), r); err != nil {
		return err
	}
	msg := strings.TrimSpace(b.String())
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case r.Level >= slog.LevelError:
		return e.el.Error(3, msg)
	case r.Level >= slog.LevelWarn:
		return e.el.Warning(2, msg)
	default:
		return e.el.Info(1, msg)
	}
}

func (e *eventLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &eventLogHandler{el: e.el, level: e.level, attrs: append(append([]slog.Attr{}, e.attrs...), as...), group: e.group}
}

func (e *eventLogHandler) WithGroup(g string) slog.Handler {
	return &eventLogHandler{el: e.el, level: e.level, attrs: e.attrs, group: g}
}

// setup is what the MSI runs after it installed the files.
func setup(ctx context.Context, o Options) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("service setup: %w", err)
	}
	dir := filepath.Dir(o.Config)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return fmt.Errorf("service setup: %w", err)
	}
	if _, err := os.Stat(o.Config); errors.Is(err, os.ErrNotExist) {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(exe), ExampleConfig))
		if err != nil {
			return fmt.Errorf("service setup: example config: %w", err)
		}
		// The example is written for Linux: point it at this machine's data directory.
		b = []byte(strings.Replace(string(b), "data_dir: /var/lib/scsync", "data_dir: '"+filepath.Join(dir, "data")+"'", 1))
		if err := os.WriteFile(o.Config, b, 0o600); err != nil {
			return fmt.Errorf("service setup: %w", err)
		}
	}
	if out, err := exec.CommandContext(ctx, "icacls", lockDown(dir)...).CombinedOutput(); err != nil {
		return fmt.Errorf("service setup: icacls %s: %w: %s", dir, err, out)
	}
	// The MSI's ServiceInstall cannot set recovery actions nor an event
	// source (wixl has no util:ServiceConfig): done here.
	if m, err := mgr.Connect(); err == nil {
		if sv, err := m.OpenService(o.Name); err == nil {
			_ = recovery(sv)
			_ = sv.Close()
		}
		_ = m.Disconnect()
	}
	if err := eventSource(o.Name); err != nil {
		return fmt.Errorf("service setup: %w", err)
	}
	_ = exec.CommandContext(ctx, "netsh", firewallDelete()...).Run() // an upgrade: replace the rule
	if out, err := exec.CommandContext(ctx, "netsh", firewallAdd(exe)...).CombinedOutput(); err != nil {
		return fmt.Errorf("service setup: firewall rule: %w: %s", err, out)
	}
	return nil
}

// cleanup is what the MSI runs before it removes the files.
func cleanup(ctx context.Context) error {
	if out, err := exec.CommandContext(ctx, "netsh", firewallDelete()...).CombinedOutput(); err != nil {
		return fmt.Errorf("service cleanup: firewall rule: %w: %s", err, out)
	}
	return nil
}
