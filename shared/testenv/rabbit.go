package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"strings"
	"testing"
	"time"
)

// RabbitVhost creates a fresh RabbitMQ vhost that guest may fully use and
// returns its AMQP URL and name; the vhost (and everything in it) is deleted
// when the test ends. The broker address comes from SCSYNC_TEST_AMQP_HOST and
// SCSYNC_TEST_AMQP_PORT (default 127.0.0.1:5672); the vhost is managed
// through the broker's HTTP management API (see rabbitMgmtEnv), not with
// rabbitmqctl, which only root and the rabbitmq user may run: the tests run
// as any user.
func RabbitVhost(t testing.TB) (url, vhost string) {
	t.Helper()
	addr := net.JoinHostPort(Env("SCSYNC_TEST_AMQP_HOST", "127.0.0.1"), Env("SCSYNC_TEST_AMQP_PORT", "5672"))
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(context.Background(), "tcp", addr)
	if err != nil {
		Unavailable(t, "rabbitmq", err)
	}
	_ = conn.Close()
	mgmt, user, password := rabbitMgmtEnv()

	vhost = Name("test")
	if _, err := mgmtSend(mgmt, user, password, http.MethodPut, "/api/vhosts/"+neturl.PathEscape(vhost), nil); err != nil {
		Unavailable(t, "rabbitmq management plugin (rabbitmq-plugins enable rabbitmq_management)", err)
	}
	t.Cleanup(func() {
		if _, err := mgmtSend(mgmt, user, password, http.MethodDelete, "/api/vhosts/"+neturl.PathEscape(vhost), nil); err != nil {
			t.Errorf("delete vhost %s: %v", vhost, err)
		}
	})
	perm := []byte(`{"configure":".*","write":".*","read":".*"}`)
	if _, err := mgmtSend(mgmt, user, password, http.MethodPut, "/api/permissions/"+neturl.PathEscape(vhost)+"/guest", perm); err != nil {
		t.Fatalf("set permissions on vhost %s: %v", vhost, err)
	}
	return fmt.Sprintf("amqp://guest:guest@%s/%s", addr, vhost), vhost
}

// rabbitMgmtEnv is the shared broker's management API and its login:
// SCSYNC_TEST_RABBIT_MGMT (default http://127.0.0.1:15672),
// SCSYNC_TEST_RABBIT_MGMT_USER and _PASSWORD (default guest).
func rabbitMgmtEnv() (mgmtURL, user, password string) {
	return Env("SCSYNC_TEST_RABBIT_MGMT", "http://127.0.0.1:15672"),
		Env("SCSYNC_TEST_RABBIT_MGMT_USER", "guest"), Env("SCSYNC_TEST_RABBIT_MGMT_PASSWORD", "guest")
}

// RabbitCloseConnections makes the broker close every client connection of
// vhost (and only that vhost), as a broker restart or network cut would.
// The management API learns of a connection a moment after it opens, so it
// waits up to 10 s for the vhost to show one.
func RabbitCloseConnections(t testing.TB, vhost string) {
	t.Helper()
	mgmt, user, password := rabbitMgmtEnv()
	var names []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := mgmtSend(mgmt, user, password, http.MethodGet, "/api/vhosts/"+neturl.PathEscape(vhost)+"/connections", nil)
		if err != nil {
			t.Fatalf("list connections of vhost %s: %v", vhost, err)
		}
		var conns []struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(b, &conns); err != nil {
			t.Fatalf("list connections of vhost %s: %v", vhost, err)
		}
		names = names[:0]
		for _, c := range conns {
			names = append(names, c.Name)
		}
		if len(names) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(names) == 0 {
		t.Logf("vhost %s has no client connections to close", vhost)
	}
	for _, n := range names {
		if _, err := mgmtSend(mgmt, user, password, http.MethodDelete, "/api/connections/"+neturl.PathEscape(n), nil); err != nil {
			t.Fatalf("close connection %s of vhost %s: %v", n, vhost, err)
		}
	}
}

// RabbitManagement returns the shared broker's HTTP management API and its
// login (SCSYNC_TEST_RABBIT_MGMT, default http://127.0.0.1:15672, guest),
// and a user-name prefix of the test's own: every broker user whose name
// starts with it is deleted when the test ends (the cloud names clinic
// users <prefix>clinic-<id>). It fails (never skips) under CI=true when the
// management plugin does not answer (scripts/stack.sh up enables it).
func RabbitManagement(t testing.TB) (mgmtURL, user, password, prefix string) {
	t.Helper()
	mgmtURL, user, password = rabbitMgmtEnv()
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
				if _, err := mgmtDo(mgmtURL, user, password, http.MethodDelete, "/api/users/"+neturl.PathEscape(u.Name)); err != nil {
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
	return mgmtRequest(hc, base, user, password, method, path, nil)
}

// mgmtSend is mgmtDo with a JSON body (nil for none).
func mgmtSend(base, user, password, method, path string, body []byte) ([]byte, error) {
	return mgmtRequest(http.DefaultClient, base, user, password, method, path, body)
}

func mgmtRequest(hc *http.Client, base, user, password, method, path string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
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
