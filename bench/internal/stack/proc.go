package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a running child process (sc-local, sc-cloud, lockd or a bare
// baseline) whose output is kept for the error message if it fails.
type Proc struct {
	Name    string
	Started time.Time
	// Ready is when WaitReady first saw /readyz answer 200.
	Ready time.Time
	cmd   *exec.Cmd
	out   *lockedBuffer
	done  chan struct{}
	err   error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the last 64 KiB: enough to explain a failure.
	if l.b.Len() > 1<<20 {
		tail := append([]byte(nil), l.b.Bytes()[l.b.Len()-64<<10:]...)
		l.b.Reset()
		l.b.Write(tail)
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs bin with env added to this process's environment; cleanup
// stops it.
func Start(cl *Cleanup, name, bin string, env []string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, out: &lockedBuffer{}, done: make(chan struct{})}
	// Not CommandContext: the cleanup stops children with SIGTERM and waits,
	// so they shut down gracefully rather than being killed with the context.
	p.cmd = exec.Command(bin, args...) //nolint:noctx // see above
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.Started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	cl.Add(func() { _ = p.Stop() })
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is the tail of what the process wrote.
func (p *Proc) Output() string { return p.out.String() }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to 20 s, then kills.
func (p *Proc) Stop() error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within 20s of SIGTERM", p.Name)
	}
}

// WaitReady polls base+"/readyz" until it answers 200, the process exits,
// or timeout passes.
func (p *Proc) WaitReady(ctx context.Context, base string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		if p.Exited() {
			return fmt.Errorf("%w: %s exited (%w):\n%s", ErrNotReady, p.Name, p.err, tail(p.Output(), 4000))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				err = linksUp(body)
			}
			if resp.StatusCode == http.StatusOK && err == nil {
				if p.Ready.IsZero() {
					p.Ready = time.Now()
				}
				return nil
			}
			if err == nil {
				err = fmt.Errorf("readyz %d", resp.StatusCode)
			}
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s after %s: %w\n%s", ErrNotReady, p.Name, timeout, last, tail(p.Output(), 4000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Usage is what the kernel says a process used.
type Usage struct {
	// PeakRSS is VmHWM, RSS is VmRSS, in bytes.
	PeakRSS int64
	RSS     int64
	// AnonRSS is RssAnon: the resident memory the process allocated
	// itself (heap, stacks), without file pages it maps (SQLite's mmap of
	// its database), which the kernel can drop and re-read.
	AnonRSS int64
	// CPU is user+system time so far.
	CPU time.Duration
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 100

// ReadUsage reads /proc/<pid>/status and /proc/<pid>/stat.
func ReadUsage(pid int) (Usage, error) {
	var u Usage
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return u, err
	}
	for line := range strings.SplitSeq(string(st), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmHWM":
			u.PeakRSS = n << 10
		case "VmRSS":
			u.RSS = n << 10
		case "RssAnon":
			u.AnonRSS = n << 10
		}
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces: count from after ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, errors.New("stack: unexpected /proc stat format")
	}
	f := strings.Fields(string(stat[i+1:]))
	// After ')': state is field 3, so utime (14) and stime (15) are f[11], f[12].
	if len(f) < 13 {
		return u, errors.New("stack: short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	u.CPU = time.Duration(ut+stt) * time.Second / clockTick
	return u, nil
}

// FreeAddr returns a free loopback address.
func FreeAddr() (string, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Wait waits for the process to exit and returns its error.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// linksUp: sc-local answers /readyz 200 once it can serve its clinic, with
// the cloud API and the broker "degraded" until they connect; the benchmarks
// measure a fully connected server, as before.
func linksUp(readyz []byte) error {
	var r struct{ Checks map[string]string }
	if err := json.Unmarshal(readyz, &r); err != nil {
		return fmt.Errorf("readyz body: %w", err)
	}
	for _, c := range []string{"rabbitmq", "cloud_api"} {
		if s, ok := r.Checks[c]; ok && s != "ok" {
			return fmt.Errorf("readyz: %s is %s", c, s)
		}
	}
	return nil
}

// Freeze stops the process with SIGSTOP: it holds its sockets but does
// nothing, as a hung node would.
func (p *Proc) Freeze() error { return p.cmd.Process.Signal(syscall.SIGSTOP) }

// Kill ends the process with SIGKILL (a crash) and waits for it.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// InGroup returns the process of process group pgid whose command name
// (/proc/<pid>/comm) is comm: the Erlang VM (beam.smp) of a private broker.
func InGroup(pgid int, comm string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(c)) != comm {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		// After ')': state, ppid, pgrp.
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("stack: no %s in process group %d", comm, pgid)
}

// Goroutines reads go_goroutines from the Prometheus metrics at
// base+"/metrics".
func Goroutines(ctx context.Context, base string) (int, error) {
	n, err := Gauge(ctx, base, "go_goroutines")
	return int(n), err
}

// Gauge reads the unlabelled metric name from the Prometheus metrics at
// base+"/metrics".
func Gauge(ctx context.Context, base, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s/metrics: status %d", base, resp.StatusCode)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s %q: %w", name, v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s/metrics: no %s", base, name)
}

// PostgresBackends matches PostgreSQL's backends serving database db (their
// process title is "postgres: [<cluster>:] <user> <db> <client> <state>").
func PostgresBackends(db string) func(string) bool {
	return func(cmd string) bool {
		f := strings.Fields(cmd)
		if len(f) < 3 || f[0] != "postgres:" {
			return false
		}
		f = f[1:]
		if strings.HasSuffix(f[0], ":") {
			f = f[1:] // the cluster's name
		}
		return len(f) >= 2 && f[1] == db
	}
}

// PostgresServer matches every process of the PostgreSQL server (backends
// of every database, the WAL writer, the checkpointer...): shared with
// other users.
func PostgresServer(cmd string) bool {
	if strings.HasPrefix(cmd, "postgres:") {
		return true
	}
	prog, _, _ := strings.Cut(cmd, " ")
	return strings.HasSuffix(prog, "/postgres") // the postmaster
}

// RabbitBroker matches the RabbitMQ broker (its Erlang VM), which serves
// every vhost: its CPU during a run includes other users' traffic.
func RabbitBroker(cmd string) bool {
	return strings.Contains(cmd, "beam.smp") && strings.Contains(cmd, "-s rabbit boot")
}
