package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/testenv"
)

// TestCredentialLifecycle (issue 14): an operator rotates a clinic's cloud
// token, broker secret and lockd token, and disables the clinic; each old
// credential stops working within seconds (the broker closes connections
// made with the old secret), and disabling stops all of them at once,
// WebSocket included. Enabling issues fresh broker and lockd credentials.
func TestCredentialLifecycle(t *testing.T) {
	parallel(t)
	redis := testenv.StartPrivateRedis(t)
	serviceTok := "svc-" + testenv.Name("token")
	lockAddr := freeAddr(t)
	lockURL := "http://" + lockAddr
	s := newStackWith(t, stackOpts{cloudNodes: 2, cloudEnv: []string{"SC_CLOUD_LOCKD_URL=" + lockURL, "SC_CLOUD_LOCKD_TOKEN=" + serviceTok}})
	startLockdAt(t, []string{lockAddr}, redis.Addr, serviceTok, nil)
	c := s.enroll(t, "Suwon Smile")
	if c.AMQP == nil || c.Lockd == nil || c.Lockd.URL != lockURL {
		t.Fatalf("enrollment lacks credentials: amqp %+v lockd %+v", c.AMQP, c.Lockd)
	}
	const within = 15 * time.Second
	admin := func(method, what string, out any) {
		t.Helper()
		if code := call(t, method, s.cloud[0]+"/v1/admin/clinics/"+c.ID+"/"+what, s.adminToken, nil, out); code != 200 && code != 204 {
			t.Fatalf("%s %s: %d", method, what, code)
		}
	}
	// api answers a clinic token on the other node (every node reads it),
	// on a machine route (the clinic token does machine work only).
	api := func(token string) int {
		return call(t, "GET", s.cloud[1]+"/v1/clinics/"+c.ID+"/digest", token, nil, nil)
	}
	lockd := func(token string) int {
		return call(t, "GET", lockURL+"/v1/locks/"+c.ID+"/patient:1", token, nil, nil)
	}
	dial := func() (*amqp.Connection, error) { return amqp.Dial(clinicAMQP(t, c, s.amqpURL)) }
	refusedWithin := func(name string, f func() error) {
		t.Helper()
		testenv.CheckFor(t, within, 100*time.Millisecond, func() error {
			if err := f(); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}

	// Cloud token.
	if code := api(c.Token); code != 200 {
		t.Fatalf("api with the enrolled token: %d", code)
	}
	var rot struct {
		Token string `json:"token"`
		AMQP  *struct {
			User   string `json:"user"`
			Secret string `json:"secret"`
		} `json:"amqp"`
		Lockd *struct {
			Token string `json:"token"`
		} `json:"lockd"`
	}
	admin("POST", "token", &rot)
	old := c.Token
	c.Token = rot.Token
	refusedWithin("old cloud token", func() error {
		if code := api(old); code != 401 {
			return fmt.Errorf("answered %d", code)
		}
		return nil
	})
	if code := api(c.Token); code != 200 {
		t.Errorf("api with the rotated token: %d", code)
	}

	// lockd token: not_held (404) means the token was accepted.
	if code := lockd(c.Lockd.Token); code != 404 {
		t.Fatalf("lockd with the enrolled token: %d", code)
	}
	admin("POST", "lockd", &rot)
	oldLock := c.Lockd.Token
	c.Lockd.Token = rot.Lockd.Token
	refusedWithin("old lockd token", func() error {
		if code := lockd(oldLock); code != 401 {
			return fmt.Errorf("answered %d", code)
		}
		return nil
	})
	if code := lockd(c.Lockd.Token); code != 404 {
		t.Errorf("lockd with the rotated token: %d", code)
	}

	// Broker secret: the connection made with the old one is closed, and
	// the old one no longer logs in.
	conn, err := dial()
	if err != nil {
		t.Fatalf("broker login: %v", err)
	}
	gone := conn.NotifyClose(make(chan *amqp.Error, 1))
	admin("POST", "broker", &rot)
	select {
	case err := <-gone:
		t.Logf("connection with the old secret closed: %v", err)
	case <-time.After(within):
		t.Errorf("the connection with the old broker secret is still open after %s", within)
	}
	oldSecret := c.AMQP.Secret
	c.AMQP.Secret = rot.AMQP.Secret
	if conn, err := amqp.Dial(amqpAs(t, s.amqpURL, c.AMQP.User, oldSecret)); err == nil {
		conn.Close()
		t.Errorf("the old broker secret still logs in")
	}
	conn, err = dial()
	if err != nil {
		t.Fatalf("broker login with the rotated secret: %v", err)
	}
	gone = conn.NotifyClose(make(chan *amqp.Error, 1))

	// Disable: everything stops at once, the WebSocket of the clinic's
	// people included.
	viewerTok := s.login(t, c, "ws-viewer", "viewer")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	connected := make(chan struct{}, 1)
	watched := make(chan error, 1)
	go func() {
		watched <- events.Watch(ctx, s.cloud[1]+"/v1/clinics/"+c.ID+"/events", viewerTok, 0, func(events.Event) {
			select {
			case connected <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatal("events websocket did not connect")
	}
	admin("POST", "disable", nil)
	select {
	case err := <-gone:
		t.Logf("connection of the disabled clinic closed: %v", err)
	case <-time.After(within):
		t.Errorf("the clinic's broker connection is still open after disabling")
	}
	if conn, err := dial(); err == nil {
		conn.Close()
		t.Errorf("a disabled clinic still logs in to the broker")
	}
	if code := api(c.Token); code != 401 {
		t.Errorf("api with a disabled clinic's token: %d", code)
	}
	if code := lockd(c.Lockd.Token); code != 401 {
		t.Errorf("lockd with a disabled clinic's token: %d", code)
	}
	select {
	case err := <-watched:
		if !errors.Is(err, events.ErrRejected) {
			t.Errorf("events websocket ended with %v, want rejected", err)
		}
	case <-time.After(within + 10*time.Second):
		t.Errorf("the events websocket of a disabled clinic is still open")
	}

	// Enable: the cloud token works again; fresh broker and lockd
	// credentials are issued.
	admin("POST", "enable", &rot)
	if code := api(c.Token); code != 200 {
		t.Errorf("api after enabling: %d", code)
	}
	c.AMQP.Secret, c.Lockd.Token = rot.AMQP.Secret, rot.Lockd.Token
	conn, err = dial()
	if err != nil {
		t.Errorf("broker login after enabling: %v", err)
	} else {
		conn.Close()
	}
	if code := lockd(c.Lockd.Token); code != 404 {
		t.Errorf("lockd after enabling: %d", code)
	}
}
