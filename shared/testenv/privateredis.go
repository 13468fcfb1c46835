package testenv

import (
	"crypto/tls"
	"errors"
	"os/exec"
	"strconv"
	"testing"
)

// PrivateRedis is a redis-server of the test's own on a free loopback port
// (no persistence), so a test can kill and restart it without touching the
// shared one.
type PrivateRedis struct {
	// Addr is host:port.
	Addr string

	t    testing.TB
	port int
	tls  []string    // TLS-only arguments, when started with TLS
	proc *serverProc // nil before the first start
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

// start starts redis-server on r's port (startRedisServer).
func (r *PrivateRedis) start() error {
	args := []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"}
	var tlsCfg *tls.Config
	if r.tls != nil {
		args = append([]string{"--port", "0", "--tls-port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--daemonize", "no"}, r.tls...)
		// Only to ask the process who it is: the tests check the
		// certificate with their own clients.
		tlsCfg = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	}
	p, err := startRedisServer(r.t, r.Addr, args, tlsCfg)
	if err != nil {
		return err
	}
	r.proc = p
	return nil
}

// Kill stops the server with SIGKILL; everything it held is lost.
func (r *PrivateRedis) Kill() {
	if r.proc == nil {
		return
	}
	_ = r.proc.cmd.Process.Kill()
	<-r.proc.exited
}
