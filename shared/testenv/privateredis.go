package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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
	return startPrivateRedis(t, nil)
}

// StartPrivateRedisTLS starts a private redis-server that speaks TLS only
// (its plaintext port is off), with the given certificate and key; clients
// need no certificate of their own.
func StartPrivateRedisTLS(t testing.TB, certFile, keyFile, caFile string) *PrivateRedis {
	t.Helper()
	return startPrivateRedis(t, []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "no"})
}

// startPrivateRedis starts the server on a free port. A port is only free
// when asked: a parallel test's server listening on port 0 may take it
// before redis-server binds it, and redis-server then exits while the other
// process answers. Such a first start is tried again on another port (a
// restart after Kill keeps its port: the test's clients name it).
func startPrivateRedis(t testing.TB, tlsArgs []string) *PrivateRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server", err)
	}
	var errs []error
	for range 5 {
		r := &PrivateRedis{t: t, port: freePort(t), tls: tlsArgs}
		r.Addr = loopback(r.port)
		err := r.start()
		if err == nil {
			t.Cleanup(r.Kill)
			return r
		}
		errs = append(errs, err)
	}
	t.Fatalf("start private redis: %v", errors.Join(errs...))
	return nil
}

// Start starts the server again, after Kill, on its port, and waits until
// it answers there.
func (r *PrivateRedis) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("restart private redis: %v", err)
	}
}

// start starts redis-server on r's port and returns once that very process
// answers there (its INFO names its pid), or an error, with what it
// printed, when it exited or another process answers.
func (r *PrivateRedis) start() error {
	args := []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"}
	opts := &redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: time.Second}
	if r.tls != nil {
		args = append([]string{"--port", "0", "--tls-port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--daemonize", "no"}, r.tls...)
		// Only to ask the process who it is: the tests check the
		// certificate with their own clients.
		opts.TLSConfig = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	}
	log := filepath.Join(r.t.TempDir(), "redis-server.log")
	out, err := os.Create(log)
	if err != nil {
		return err
	}
	printed := func() string {
		b, _ := os.ReadFile(log)
		return strings.TrimSpace(string(b))
	}
	cmd := exec.CommandContext(context.Background(), "redis-server", args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = out.Close()
		close(done)
	}()
	r.cmd, r.done = cmd, done
	want := "process_id:" + strconv.Itoa(cmd.Process.Pid) + "\r\n"
	rc := redis.NewClient(opts)
	defer func() { _ = rc.Close() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("redis-server on %s exited: %s", r.Addr, printed())
		default:
		}
		info, err := rc.Info(context.Background(), "server").Result()
		switch {
		case err == nil && strings.Contains(info, want):
			return nil
		case err == nil:
			err = errors.New("another process answers there")
		}
		if time.Now().After(deadline) {
			r.Kill()
			return fmt.Errorf("redis-server on %s: %w (it printed: %s)", r.Addr, err, printed())
		}
		time.Sleep(20 * time.Millisecond)
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
