package testenv

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestSentinelRigRefusesATakenPort: when another process holds the port a
// rig's redis-server was given (a free port is only free when asked), the
// start fails, though something answers there, instead of handing the test
// an address its server never listened on (TestSentinelFailover once waited
// a minute on a Sentinel that had exited at once).
func TestSentinelRigRefusesATakenPort(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server", err)
	}
	ln := holdPort(t)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	r := &PrivateSentinel{t: t, procs: map[string]*serverProc{}, args: map[string][]string{}}
	err := r.start(ln.Addr().String(), []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"})
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("start on a taken port = %v, want an error saying redis-server exited", err)
	}
	if len(r.procs) != 0 {
		t.Fatalf("the rig keeps %d servers after a failed start", len(r.procs))
	}
}

// TestPrivateRedisRefusesATakenPort is the same for a private Redis: its
// start on a port another process holds fails; StartPrivateRedis then takes
// another port, and the server it hands out is its own and restarts there.
func TestPrivateRedisRefusesATakenPort(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server", err)
	}
	ln := holdPort(t)
	port := ln.Addr().(*net.TCPAddr).Port
	taken := &PrivateRedis{t: t, port: port, Addr: ln.Addr().String()}
	if err := taken.start(); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("start on a taken port = %v, want an error saying redis-server exited", err)
	}

	r := StartPrivateRedis(t)
	ping := func() error {
		rc := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
		defer rc.Close()
		return rc.Ping(context.Background()).Err()
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if ping() == nil {
		t.Fatal("a killed private Redis still answers")
	}
	r.Start()
	if err := ping(); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
}

// holdPort listens on a free loopback port until the test ends, answering
// like a server that is not Redis (it closes every connection).
func holdPort(t *testing.T) net.Listener {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln
}
