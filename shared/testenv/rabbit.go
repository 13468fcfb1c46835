package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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

// RabbitManagement returns the shared broker's HTTP management API and its
// login (SCSYNC_TEST_RABBIT_MGMT, default http://127.0.0.1:15672, guest),
// and a user-name prefix of the test's own: every broker user whose name
// starts with it is deleted when the test ends (the cloud names clinic
// users <prefix>clinic-<id>). It fails (never skips) under CI=true when the
// management plugin does not answer (scripts/stack.sh up enables it).
func RabbitManagement(t testing.TB) (mgmtURL, user, password, prefix string) {
	t.Helper()
	mgmtURL = Env("SCSYNC_TEST_RABBIT_MGMT", "http://127.0.0.1:15672")
	user, password = Env("SCSYNC_TEST_RABBIT_MGMT_USER", "guest"), Env("SCSYNC_TEST_RABBIT_MGMT_PASSWORD", "guest")
	if _, err := mgmtDo(mgmtURL, user, password, http.MethodGet, "/api/whoami"); err != nil {
		Unavailable(t, "rabbitmq management plugin (rabbitmq-plugins enable rabbitmq_management)", err)
	}
	prefix = Name("u") + "."
	t.Cleanup(func() {
		b, err := mgmtDo(mgmtURL, user, password, http.MethodGet, "/api/users")
		if err != nil {
			t.Errorf("list broker users: %v", err)
			return
		}
		var users []struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(b, &users); err != nil {
			t.Errorf("list broker users: %v", err)
			return
		}
		for _, u := range users {
			if strings.HasPrefix(u.Name, prefix) {
				if _, err := mgmtDo(mgmtURL, user, password, http.MethodDelete, "/api/users/"+url.PathEscape(u.Name)); err != nil {
					t.Errorf("delete broker user %s: %v", u.Name, err)
				}
			}
		}
	})
	return mgmtURL, user, password, prefix
}

func mgmtDo(base, user, password, method, path string) ([]byte, error) {
	return mgmtDoWith(http.DefaultClient, base, user, password, method, path)
}

func mgmtDoWith(hc *http.Client, base, user, password, method, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(user, password)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	gone := method == http.MethodDelete && resp.StatusCode == http.StatusNotFound
	if resp.StatusCode >= 300 && !gone {
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return b, nil
}
