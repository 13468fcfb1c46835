package testenv

import (
	"context"
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
	procs map[string]*exec.Cmd
	args  map[string][]string
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
	r := &PrivateSentinel{t: t, procs: map[string]*exec.Cmd{}, args: map[string][]string{}}
	master, replica := freePort(t), freePort(t)
	r.Master, r.Replica = loopback(master), loopback(replica)
	base := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}
	r.run(r.Master, append([]string{"--port", strconv.Itoa(master), "--dir", t.TempDir()}, base...)...)
	r.run(r.Replica, append([]string{"--port", strconv.Itoa(replica), "--dir", t.TempDir(),
		"--replicaof", "127.0.0.1", strconv.Itoa(master)}, base...)...)
	for range 3 {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := strings.Join([]string{
			"port " + strconv.Itoa(port), "bind 127.0.0.1", "dir " + dir,
			"sentinel monitor " + SentinelMaster + " 127.0.0.1 " + strconv.Itoa(master) + " 2",
			"sentinel down-after-milliseconds " + SentinelMaster + " 1000",
			"sentinel failover-timeout " + SentinelMaster + " 4000",
			"sentinel parallel-syncs " + SentinelMaster + " 1",
		}, "\n") + "\n"
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		r.run(loopback(port), conf, "--sentinel")
		r.Sentinels = append(r.Sentinels, loopback(port))
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
	r.run(r.Master, args...)
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

func (r *PrivateSentinel) run(addr string, args ...string) {
	r.t.Helper()
	cmd := exec.CommandContext(context.Background(), "redis-server", args...)
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server %v: %v", args, err)
	}
	r.mu.Lock()
	r.procs[addr] = cmd
	r.args[addr] = args
	r.mu.Unlock()
	r.t.Cleanup(func() { r.kill(addr) })
	CheckFor(r.t, 20*time.Second, 20*time.Millisecond, func() error {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(context.Background(), "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func (r *PrivateSentinel) kill(addr string) {
	r.mu.Lock()
	cmd := r.procs[addr]
	delete(r.procs, addr)
	r.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}
