package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// PrivateRedis is a redis-server of the test's own on a free loopback port
// (no persistence), so a test can kill and restart it without touching the
// shared one.
type PrivateRedis struct {
	// Addr is host:port.
	Addr string

	t    testing.TB
	port int
	tls  []string // TLS-only arguments, when started with TLS
	cmd  *exec.Cmd
	done chan struct{}
}

// StartPrivateRedis starts a private redis-server, stopped when the test
// ends. It fails (never skips) under CI=true when redis-server is missing.
func StartPrivateRedis(t testing.TB) *PrivateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server", err)
	}
	r := &PrivateRedis{t: t, port: freePort(t)}
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.port)
	r.Start()
	t.Cleanup(r.Kill)
	return r
}

// StartPrivateRedisTLS starts a private redis-server that speaks TLS only
// (its plaintext port is off), with the given certificate and key; clients
// need no certificate of their own.
func StartPrivateRedisTLS(t testing.TB, certFile, keyFile, caFile string) *PrivateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server", err)
	}
	r := &PrivateRedis{t: t, port: freePort(t), tls: []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "no"}}
	r.Addr = "127.0.0.1:" + strconv.Itoa(r.port)
	r.Start()
	t.Cleanup(r.Kill)
	return r
}

// Start starts the server (again, after Kill) and waits for its port.
func (r *PrivateRedis) Start() {
	r.t.Helper()
	args := []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"}
	if r.tls != nil {
		args = append([]string{"--port", "0", "--tls-port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--daemonize", "no"}, r.tls...)
	}
	r.cmd = exec.CommandContext(context.Background(), "redis-server", args...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start private redis: %v", err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(r.cmd, r.done)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(context.Background(), "tcp", r.Addr)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-r.done:
			r.t.Fatalf("private redis exited while starting")
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatal(fmt.Errorf("private redis not listening on %s", r.Addr))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL; everything it held is lost.
func (r *PrivateRedis) Kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}
