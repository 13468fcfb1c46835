package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// PrivateRabbit is a RabbitMQ node of the test's own, on free loopback ports
// with its data in a temporary directory, so a test can kill and restart a
// broker without touching the shared one.
type PrivateRabbit struct {
	// URL is the AMQP URL (guest/guest, default vhost).
	URL string

	t    testing.TB
	dir  string
	port int
	name string
	bin  string
	env  []string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartPrivateRabbit boots a private node (about 7 s) and stops it when the
// test ends. It fails (never skips) under CI=true when rabbitmq-server is
// missing.
func StartPrivateRabbit(t testing.TB) *PrivateRabbit {
	t.Helper()
	bin := "/usr/lib/rabbitmq/bin/rabbitmq-server"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("rabbitmq-server"); err != nil {
			Unavailable(t, "rabbitmq-server", err)
		}
	}
	port := freePort(t)
	dist := freePort(t)
	dir := t.TempDir()
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", port)
	if err := os.WriteFile(filepath.Join(dir, "rabbit.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plugins"), []byte("[].\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &PrivateRabbit{
		URL: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port),
		t:   t, dir: dir, port: port, name: fmt.Sprintf("%s@localhost", Name("rabbit")),
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
	r.Start()
	t.Cleanup(r.Kill)
	return r
}

// Start boots the node (again, after Kill) and waits until it accepts
// connections.
func (r *PrivateRabbit) Start() {
	r.t.Helper()
	out, err := os.OpenFile(filepath.Join(r.dir, "server.out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	r.cmd = exec.CommandContext(context.Background(), r.bin)
	r.cmd.Env = append(os.Environ(), r.env...)
	r.cmd.Stdout, r.cmd.Stderr = out, out
	// Its own process group, so Kill takes the Erlang VM and its helpers.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start private rabbitmq: %v", err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}, out *os.File) {
		_ = cmd.Wait()
		_ = out.Close()
		close(done)
	}(r.cmd, r.done, out)
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(context.Background(), "tcp", fmt.Sprintf("127.0.0.1:%d", r.port))
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-r.done:
			b, _ := os.ReadFile(filepath.Join(r.dir, "server.out"))
			r.t.Fatalf("private rabbitmq exited while starting:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("private rabbitmq not listening on %d after 90s", r.port)
		}
		time.Sleep(200 * time.Millisecond)
	}
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
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	<-r.done
	// epmd may keep the node name registered for a moment; the next start
	// uses the same name, which epmd frees once the VM is gone.
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
