package testenv

import (
	"bytes"
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PrivateRabbit is a RabbitMQ node of the test's own, on free loopback ports
// with its data in a temporary directory, so a test can kill and restart a
// broker without touching the shared one.
type PrivateRabbit struct {
	// URL is the AMQP URL (guest/guest, default vhost): amqps:// on a node
	// started with StartPrivateRabbitTLS, which has no plaintext listener.
	URL string
	// MgmtURL is the HTTP management API (guest/guest), when the node was
	// started with StartPrivateRabbitManaged; empty otherwise.
	MgmtURL string

	t    testing.TB
	dir  string
	port int
	name string
	bin  string
	env  []string
	tls  bool
	// cert is the DER of the node's own TLS certificate: a TLS listener on
	// its port counts as the node only when it presents this one.
	cert []byte
	cmd  *exec.Cmd
	done chan struct{}
}

// StartPrivateRabbit boots a private node (about 7 s) and stops it when the
// test ends. It fails (never skips) under CI=true when rabbitmq-server is
// missing.
func StartPrivateRabbit(t testing.TB) *PrivateRabbit {
	t.Helper()
	return startPrivateRabbit(t, false, nil)
}

// StartPrivateRabbitManaged is StartPrivateRabbit with the plugins sc-cloud
// needs to give clinics their own broker identities (the management API,
// on MgmtURL, and the consistent-hash exchange); it boots a few seconds
// slower.
func StartPrivateRabbitManaged(t testing.TB) *PrivateRabbit {
	t.Helper()
	return startPrivateRabbit(t, true, nil)
}

// StartPrivateRabbitManagedConf is StartPrivateRabbitManaged with further
// rabbitmq.conf lines (for example the deployment's tuning of statistics
// collection), to measure the broker as production configures it.
func StartPrivateRabbitManagedConf(t testing.TB, conf string) *PrivateRabbit {
	t.Helper()
	return startPrivateRabbit(t, true, nil, conf)
}

// RabbitTLS is a private node's TLS listener: its certificate and key
// (PEM files, e.g. from PKI) and the CA it trusts. It asks clients for no
// certificate: they authenticate with their login, over TLS.
type RabbitTLS struct {
	CAFile, CertFile, KeyFile string
	// Managed adds the plugins of StartPrivateRabbitManaged, with the
	// management API over HTTPS only (MgmtURL https://…).
	Managed bool
}

// StartPrivateRabbitTLS is StartPrivateRabbit listening over TLS only
// (listeners.ssl.default, with listeners.tcp = none): URL is
// amqps://guest:guest@127.0.0.1:PORT/, and a plaintext amqp:// connection
// to the node has nowhere to go.
func StartPrivateRabbitTLS(t testing.TB, tls RabbitTLS) *PrivateRabbit {
	t.Helper()
	return startPrivateRabbit(t, tls.Managed, &tls)
}

func startPrivateRabbit(t testing.TB, managed bool, tls *RabbitTLS, extraConf ...string) *PrivateRabbit {
	t.Helper()
	bin, err := rabbitServerBin()
	if err != nil {
		Unavailable(t, "rabbitmq-server", err)
	}
	r, err := launchPrivateRabbit(bin, t.TempDir(), managed, tls, extraConf...)
	if r != nil {
		t.Cleanup(r.Kill)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.t = t
	return r
}

// LaunchPrivateRabbit is StartPrivateRabbit (managed: StartPrivateRabbitManaged)
// for a program that is not a test (the benchmarks): the node keeps its data
// in dir, which must exist and which the caller removes after Kill. The
// caller must Kill the node, also when an error is returned with it.
// extraConf lines are appended to the node's rabbitmq.conf.
func LaunchPrivateRabbit(dir string, managed bool, extraConf ...string) (*PrivateRabbit, error) {
	bin, err := rabbitServerBin()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq-server: %w", err)
	}
	return launchPrivateRabbit(bin, dir, managed, nil, extraConf...)
}

func rabbitServerBin() (string, error) {
	bin := "/usr/lib/rabbitmq/bin/rabbitmq-server"
	if _, err := os.Stat(bin); err != nil {
		return exec.LookPath("rabbitmq-server")
	}
	return bin, nil
}

func launchPrivateRabbit(bin, dir string, managed bool, tls *RabbitTLS, extraConf ...string) (*PrivateRabbit, error) {
	port, err := freePortErr()
	if err != nil {
		return nil, err
	}
	dist, err := freePortErr()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", port)
	scheme := "amqp"
	if tls != nil {
		scheme = "amqps"
		conf = fmt.Sprintf("listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:%d\nloopback_users = none\n"+
			"ssl_options.cacertfile = %s\nssl_options.certfile = %s\nssl_options.keyfile = %s\n"+
			"ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n", port, tls.CAFile, tls.CertFile, tls.KeyFile)
	}
	plugins, mgmtURL := "[].\n", ""
	mgmtClient := http.DefaultClient
	if managed {
		mgmt, err := freePortErr()
		if err != nil {
			return nil, err
		}
		conf += fmt.Sprintf("management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %d\n", mgmt)
		mgmtURL = fmt.Sprintf("http://127.0.0.1:%d", mgmt)
		if tls != nil {
			conf = strings.Replace(conf, "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port", "management.ssl.ip = 127.0.0.1\nmanagement.ssl.port", 1)
			conf += fmt.Sprintf("management.ssl.cacertfile = %s\nmanagement.ssl.certfile = %s\nmanagement.ssl.keyfile = %s\n",
				tls.CAFile, tls.CertFile, tls.KeyFile)
			mgmtURL = "https" + strings.TrimPrefix(mgmtURL, "http")
			var err error
			if mgmtClient, err = caClient(tls.CAFile); err != nil {
				return nil, err
			}
		}
		plugins = "[rabbitmq_management,rabbitmq_consistent_hash_exchange].\n"
	}
	for _, c := range extraConf {
		conf += strings.TrimSpace(c) + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "rabbit.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "plugins"), []byte(plugins), 0o644); err != nil {
		return nil, err
	}
	r := &PrivateRabbit{
		URL: fmt.Sprintf("%s://guest:guest@127.0.0.1:%d/", scheme, port), MgmtURL: mgmtURL,
		dir: dir, port: port, name: fmt.Sprintf("%s@localhost", Name("rabbit")), tls: tls != nil,
	}
	r.env = []string{
		"HOME=" + dir,
		"RABBITMQ_NODENAME=" + r.name,
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(dist),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbit"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "plugins"),
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "pid"),
	}
	r.bin = bin
	if tls != nil {
		if r.cert, err = certDER(tls.CertFile); err != nil {
			return nil, err
		}
	}
	if err := r.boot(); err != nil {
		return r, err
	}
	if managed {
		deadline := time.Now().Add(rabbitBootTimeout)
		for {
			_, err := mgmtDoWith(mgmtClient, r.MgmtURL, "guest", "guest", "GET", "/api/whoami")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return r, fmt.Errorf("private rabbitmq management API not answering after %s: %w", rabbitBootTimeout, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return r, nil
}

// Start boots the node (again, after Kill) and waits until it accepts
// connections.
func (r *PrivateRabbit) Start() {
	r.t.Helper()
	if err := r.boot(); err != nil {
		r.t.Fatal(err)
	}
}

// ProcessGroup is the process group of the running node: the Erlang VM
// (beam.smp) and its helpers, for measuring what the broker uses.
func (r *PrivateRabbit) ProcessGroup() int {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

func (r *PrivateRabbit) boot() error {
	out, err := os.OpenFile(filepath.Join(r.dir, "server.out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	raiseFileLimit()
	r.cmd = exec.CommandContext(context.Background(), r.bin)
	r.cmd.Env = append(os.Environ(), r.env...)
	r.cmd.Stdout, r.cmd.Stderr = out, out
	// Its own process group, so Kill takes the Erlang VM and its helpers.
	ownGroup(r.cmd)
	if err := r.cmd.Start(); err != nil {
		_ = out.Close()
		return fmt.Errorf("start private rabbitmq: %w", err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}, out *os.File) {
		_ = cmd.Wait()
		_ = out.Close()
		close(done)
	}(r.cmd, r.done, out)
	deadline := time.Now().Add(rabbitBootTimeout)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", r.port))
		if err == nil {
			ok := r.answers(c)
			_ = c.Close()
			if ok {
				return nil
			}
		}
		select {
		case <-r.done:
			b, _ := os.ReadFile(filepath.Join(r.dir, "server.out"))
			return fmt.Errorf("private rabbitmq exited while starting:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(r.dir, "server.out"))
			return fmt.Errorf("private rabbitmq not listening on %d after %s; its output:\n%s", r.port, rabbitBootTimeout, lastLines(b, 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// answers tells whether the connection c reached the node: not a TCP
// self-connection (a dial to a port nobody listens on, in the ephemeral
// range, now and then gets the same port as its own source and "connects"
// to itself — seen under a busy test run, which then took the node as up a
// minute before it was) and, on a plaintext listener, a peer that answers
// the AMQP 0-9-1 protocol header with a method frame (Connection.Start).
func (r *PrivateRabbit) answers(c net.Conn) bool {
	if c.LocalAddr().String() == c.RemoteAddr().String() {
		return false
	}
	if r.tls {
		return presents(c, r.cert)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return false
	}
	var frame [1]byte
	if _, err := io.ReadFull(c, frame[:]); err != nil {
		return false
	}
	return frame[0] == 1 // frame type 1: a method frame
}

// rabbitBootTimeout bounds a private node's boot. An idle machine boots one
// in about 10 s; a 2-core machine running a whole test suite has been seen
// to need more than 90 s.
const rabbitBootTimeout = 4 * time.Minute

// lastLines is the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// Kill stops the node with SIGKILL (a crash); its durable data stays for
// the next Start.
func (r *PrivateRabbit) Kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case <-r.done:
		return
	default:
	}
	killGroup(r.cmd)
	<-r.done
	// r.done means the rabbitmq-server script is gone; the Erlang VM is its
	// child (started in the background) and may take a while longer to die
	// on a busy machine, its listening socket still accepting. Wait until
	// no process of the group is left, so a Start after Kill never takes
	// the dying node for the new one.
	for deadline := time.Now().Add(time.Minute); groupAlive(r.cmd.Process.Pid) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	// epmd may keep the node name registered for a moment; the next start
	// uses the same name, which epmd frees once the VM is gone.
}

// groupAlive tells whether a process of group pgid is still running (a
// zombie does not count: whoever adopted it may be slow to reap it). It
// reads /proc; where there is none it answers false.
func groupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) < 3 || fields[0] == "Z" {
			continue
		}
		if g, err := strconv.Atoi(fields[2]); err == nil && g == pgid {
			return true
		}
	}
	return false
}

// presents tells whether the TLS server on c presents the certificate
// whose DER is want: the node's own, not another test's TLS server that
// took the port while the node was booting.
func presents(c net.Conn, want []byte) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc := cryptotls.Client(c, &cryptotls.Config{
		InsecureSkipVerify: true, //nolint:gosec // identity is checked below, by the exact certificate
		MinVersion:         cryptotls.VersionTLS12,
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return false
	}
	peer := tc.ConnectionState().PeerCertificates
	return len(peer) > 0 && bytes.Equal(peer[0].Raw, want)
}

// certDER is the DER of the first certificate in the PEM file path.
func certDER(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("testenv: %s holds no certificate", path)
	}
	return blk.Bytes, nil
}

// caClient is an HTTP client trusting only the CA in caFile.
func caClient(caFile string) (*http.Client, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("testenv: %s holds no certificate", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &cryptotls.Config{RootCAs: pool, MinVersion: cryptotls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

// FreeAddr is a loopback host:port nothing listens on, for a server the
// test starts (and may kill and start again on the same address): see
// freePortErr.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

func freePort(t testing.TB) int {
	t.Helper()
	p, err := freePortErr()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// freePortErr returns a loopback port nothing listens on, below the
// kernel's ephemeral range when it leaves room for one: a private server
// that is killed and started again on its port (a broker restart, a node
// kill) must find it free, and a port of the ephemeral range can meanwhile
// be taken as the source port of any outgoing connection on the machine
// (seen: a private RabbitMQ's restart failing with could_not_start_listener).
// Each port it gives is reserved for the life of the process, against this
// process and every other one using testenv (portlock.go).
func freePortErr() (int, error) {
	if lo, hi := fixedPortRange(); hi > lo {
		for range 50 {
			port := lo + rand.IntN(hi-lo+1)
			ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				continue // in use: try another
			}
			_ = ln.Close()
			if !reservePort(port) {
				continue // given to another server of the tests, maybe not yet listening
			}
			return port, nil
		}
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// fixedPortRange is where freePortErr picks: from 20000 up to just below
// the ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range;
// 32768–60999 by default), or an empty range when there is no room or the
// range cannot be read (then the kernel picks, as net.Listen(":0") does).
func fixedPortRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, 0
	}
	first, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, 0
	}
	return 20000, first - 1
}
