package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the Sentinels of a PrivateSentinel monitor
// their master under (redis.sentinel.master).
const SentinelMaster = "scsync"

// PrivateSentinel is a Redis master, one replica and three Sentinels of the
// test's own on free loopback ports (no persistence), so a test can kill the
// master and watch the failover without touching the shared Redis.
type PrivateSentinel struct {
	// Master is host:port of the first master, Replica that of its replica
	// (the master after a failover).
	Master, Replica string
	// Sentinels are the Sentinels' host:port (redis.sentinel.addrs).
	Sentinels []string

	t     testing.TB
	mu    sync.Mutex
	procs map[string]*serverProc
	args  map[string][]string
}

// serverProc is one redis-server of the rig.
type serverProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when it has exited
}

// StartPrivateSentinel starts the master, the replica and the Sentinels and
// returns once the replica is in sync and every Sentinel knows the replica
// and the two other Sentinels (before that a failover cannot happen). All
// of it is stopped when the test ends. It fails (never skips) under CI=true
// when redis-server is missing.
func StartPrivateSentinel(t testing.TB) *PrivateSentinel {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server", err)
	}
	r := &PrivateSentinel{t: t, procs: map[string]*serverProc{}, args: map[string][]string{}}
	base := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}
	r.Master = r.runNew(func(port int) []string {
		return append([]string{"--port", strconv.Itoa(port), "--dir", t.TempDir()}, base...)
	})
	_, master, _ := net.SplitHostPort(r.Master)
	r.Replica = r.runNew(func(port int) []string {
		return append([]string{"--port", strconv.Itoa(port), "--dir", t.TempDir(), "--replicaof", "127.0.0.1", master}, base...)
	})
	for range 3 {
		r.Sentinels = append(r.Sentinels, r.runNew(func(port int) []string {
			dir := t.TempDir()
			conf := filepath.Join(dir, "sentinel.conf")
			text := strings.Join([]string{
				"port " + strconv.Itoa(port), "bind 127.0.0.1", "dir " + dir,
				"sentinel monitor " + SentinelMaster + " 127.0.0.1 " + master + " 2",
				"sentinel down-after-milliseconds " + SentinelMaster + " 1000",
				"sentinel failover-timeout " + SentinelMaster + " 4000",
				"sentinel parallel-syncs " + SentinelMaster + " 1",
			}, "\n") + "\n"
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{conf, "--sentinel"}
		}))
	}
	ctx := context.Background()
	CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		rc := redis.NewClient(&redis.Options{Addr: r.Replica})
		defer rc.Close()
		info, err := rc.Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica not in sync: %w", err)
		}
		for _, s := range r.Sentinels {
			sc := redis.NewSentinelClient(&redis.Options{Addr: s})
			reps, err1 := sc.Replicas(ctx, SentinelMaster).Result()
			sens, err2 := sc.Sentinels(ctx, SentinelMaster).Result()
			_ = sc.Close()
			if err := errors.Join(err1, err2); err != nil || len(reps) != 1 || len(sens) != 2 {
				return fmt.Errorf("sentinel %s sees %d replicas, %d sentinels (%w)", s, len(reps), len(sens), err)
			}
		}
		return nil
	})
	return r
}

// KillMaster kills the first master with SIGKILL: what it had not yet
// replicated is lost. The Sentinels then promote the replica (WaitPromoted).
func (r *PrivateSentinel) KillMaster() { r.kill(r.Master) }

// WaitPromoted returns when the first Sentinel names the replica as the
// master, or fails the test after timeout.
func (r *PrivateSentinel) WaitPromoted(timeout time.Duration) {
	r.t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: r.Sentinels[0]})
	defer func() { _ = sc.Close() }()
	// Each Sentinel learns the new master on its own schedule (a loaded
	// machine delays the gossip): wait for the one asked to agree.
	CheckFor(r.t, timeout, 200*time.Millisecond, func() error {
		m, err := sc.GetMasterAddrByName(context.Background(), SentinelMaster).Result()
		if err != nil {
			return err
		}
		if got := net.JoinHostPort(m[0], m[1]); got != r.Replica {
			return fmt.Errorf("master after failover: %s, want the replica %s", got, r.Replica)
		}
		return nil
	})
}

// RestartMaster starts the killed first master again (empty: no
// persistence) and returns once the Sentinels have made it a replica of the
// promoted one and it is in sync, or fails the test after timeout.
func (r *PrivateSentinel) RestartMaster(timeout time.Duration) {
	r.t.Helper()
	r.mu.Lock()
	args := r.args[r.Master]
	r.mu.Unlock()
	if err := r.start(r.Master, args); err != nil {
		r.t.Fatalf("restart the master: %v", err)
	}
	ctx := context.Background()
	CheckFor(r.t, timeout, 200*time.Millisecond, func() error {
		rc := redis.NewClient(&redis.Options{Addr: r.Master})
		defer rc.Close()
		info, err := rc.Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("old master not yet a replica in sync: %q, %w", info, err)
		}
		return nil
	})
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// runNew starts a redis-server of the rig on a free port (args gives its
// arguments for that port) and returns its host:port once it answers there.
// A port is only free when asked: another process (a parallel test's server
// on port 0) may take it before redis-server binds it, and redis-server then
// exits while the other process answers. Such a start is tried again on
// another port.
func (r *PrivateSentinel) runNew(args func(port int) []string) string {
	r.t.Helper()
	var errs []error
	for range 5 {
		port := freePort(r.t)
		addr := loopback(port)
		err := r.start(addr, args(port))
		if err == nil {
			return addr
		}
		errs = append(errs, err)
	}
	r.t.Fatalf("start redis-server: %v", errors.Join(errs...))
	return ""
}

// start starts redis-server with args, to listen on addr, and keeps it in
// the rig once that very process answers there (startRedisServer).
func (r *PrivateSentinel) start(addr string, args []string) error {
	p, err := startRedisServer(r.t, addr, args, nil)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.procs[addr] = p
	r.args[addr] = args
	r.mu.Unlock()
	r.t.Cleanup(func() { r.kill(addr) })
	return nil
}

// startRedisServer starts redis-server with args, to listen on addr (over
// TLS when tlsCfg is set), and returns once that very process answers there
// (its INFO names its pid), or an error, with what it printed, when it
// exited or another process answers.
func startRedisServer(t testing.TB, addr string, args []string, tlsCfg *tls.Config) (*serverProc, error) {
	log := filepath.Join(t.TempDir(), "redis-server.log")
	out, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	printed := func() string {
		b, _ := os.ReadFile(log)
		return strings.TrimSpace(string(b))
	}
	cmd := exec.CommandContext(context.Background(), "redis-server", args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("start redis-server %v: %w", args, err)
	}
	p := &serverProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = out.Close()
		close(p.exited)
	}()
	want := "process_id:" + strconv.Itoa(cmd.Process.Pid) + "\r\n"
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, TLSConfig: tlsCfg})
	defer func() { _ = rc.Close() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("redis-server for %s exited: %s", addr, printed())
		default:
		}
		info, err := rc.Info(context.Background(), "server").Result()
		switch {
		case err == nil && strings.Contains(info, want):
			return p, nil
		case err == nil:
			err = errors.New("another process answers there")
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.exited
			return nil, fmt.Errorf("redis-server for %s: %w (it printed: %s)", addr, err, printed())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *PrivateSentinel) kill(addr string) {
	r.mu.Lock()
	p := r.procs[addr]
	delete(r.procs, addr)
	r.mu.Unlock()
	if p != nil {
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}
