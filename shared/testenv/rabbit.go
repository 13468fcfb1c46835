package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// rabbitmqctlTimeout bounds one rabbitmqctl call (each takes 1-2 s).
const rabbitmqctlTimeout = 60 * time.Second

// RabbitVhost creates a fresh RabbitMQ vhost that guest may fully use and
// returns its AMQP URL and name; the vhost (and everything in it) is deleted
// when the test ends. The broker address comes from SCSYNC_TEST_AMQP_HOST and
// SCSYNC_TEST_AMQP_PORT (default 127.0.0.1:5672); the vhost is managed with
// the local rabbitmqctl.
func RabbitVhost(t testing.TB) (url, vhost string) {
	t.Helper()
	addr := net.JoinHostPort(Env("SCSYNC_TEST_AMQP_HOST", "127.0.0.1"), Env("SCSYNC_TEST_AMQP_PORT", "5672"))
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(context.Background(), "tcp", addr)
	if err != nil {
		Unavailable(t, "rabbitmq", err)
	}
	_ = conn.Close()
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		Unavailable(t, "rabbitmq", err)
	}

	vhost = Name("test")
	if err := rabbitmqctl("add_vhost", vhost); err != nil {
		Unavailable(t, "rabbitmq", err)
	}
	t.Cleanup(func() {
		if err := rabbitmqctl("delete_vhost", vhost); err != nil {
			t.Errorf("delete vhost %s: %v", vhost, err)
		}
	})
	if err := rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"); err != nil {
		t.Fatalf("set permissions on vhost %s: %v", vhost, err)
	}
	return fmt.Sprintf("amqp://guest:guest@%s/%s", addr, vhost), vhost
}

// RabbitCloseConnections makes the broker close every client connection of
// vhost (and only that vhost), as a broker restart or network cut would.
func RabbitCloseConnections(t testing.TB, vhost string) {
	t.Helper()
	if err := rabbitmqctl("close_all_connections", "-p", vhost, "test"); err != nil {
		t.Fatalf("close connections of vhost %s: %v", vhost, err)
	}
}

func rabbitmqctl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), rabbitmqctlTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("rabbitmqctl %s (output %q): %w", strings.Join(args, " "), strings.TrimSpace(string(out)), err)
	}
	return nil
}
