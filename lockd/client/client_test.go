package client

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scsync/scsync/lockd/lockapi"
)

// These tests cover how answers map to errors, including answers that do
// not come from lockd (a proxy). lockd's real behaviour, over real Redis, is
// tested end to end in internal/app.

func answer(status int, body string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   error
		not    error
	}{
		{"held", 409, `{"code":"held","message":"m","lock":{"resource":"p/1","token":5}}`, ErrHeld, ErrUnavailable},
		{"expired", 410, `{"code":"expired","message":"m"}`, ErrExpired, ErrNotYours},
		{"not yours", 403, `{"code":"not_yours","message":"m"}`, ErrNotYours, ErrForbidden},
		{"forbidden", 403, `{"code":"forbidden","message":"m"}`, ErrForbidden, ErrNotYours},
		{"unauthorized", 401, `{"code":"unauthorized","message":"m"}`, ErrUnauthorized, ErrUnavailable},
		{"invalid", 400, `{"code":"invalid","message":"m"}`, ErrInvalid, ErrUnavailable},
		{"redis down", 503, `{"code":"unavailable","message":"m"}`, ErrUnavailable, ErrNoFreeNode},
		{"internal", 500, `{"code":"internal","message":"m"}`, ErrUnavailable, ErrHeld},
		{"no free node", 503, `{"code":"no_free_node","message":"m","retry_after_ms":1500}`, ErrNoFreeNode, ErrUnavailable},
		{"proxy 502", 502, `<html>bad gateway</html>`, ErrUnavailable, ErrHeld},
		{"proxy 404", 404, `not found`, nil, ErrNotHeld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := answer(tt.status, tt.body)
			defer srv.Close()
			_, err := New(srv.URL, "tok", nil).Renew(context.Background(), lockapi.RenewRequest{})
			var e *Error
			if !errors.As(err, &e) || e.Status != tt.status {
				t.Fatalf("Renew err = %v, want *Error with status %d", err, tt.status)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Renew err = %v, want errors.Is %v", err, tt.want)
			}
			if errors.Is(err, tt.not) {
				t.Errorf("Renew err = %v, must not be %v", err, tt.not)
			}
		})
	}
}

func TestHeldByAndDetails(t *testing.T) {
	srv := answer(409, `{"code":"held","message":"m","lock":{"resource":"p/1","holder":{"clinic":"42","side":"cloud","client":"c","user":"bob"},"token":5}}`)
	defer srv.Close()
	_, err := New(srv.URL+"/", "tok", nil).Acquire(context.Background(), lockapi.AcquireRequest{})
	l, ok := HeldBy(err)
	if !ok || l.Holder.User != "bob" || l.Holder.Clinic != 42 || l.Token != 5 {
		t.Errorf("HeldBy(%v) = %+v, %v, want bob's lock", err, l, ok)
	}
	if _, ok := HeldBy(ErrExpired); ok {
		t.Error("HeldBy(ErrExpired) = ok")
	}

	nf := answer(503, `{"code":"no_free_node","message":"m","retry_after_ms":1500}`)
	defer nf.Close()
	_, err = New(nf.URL, "tok", nil).LeaseNode(context.Background(), "n")
	var e *Error
	if !errors.As(err, &e) || e.RetryAfter != 1500*time.Millisecond {
		t.Errorf("LeaseNode err = %v, want RetryAfter 1.5s", err)
	}

	free := answer(404, `{"code":"not_held","message":"m","last_token":9}`)
	defer free.Close()
	st, err := New(free.URL, "tok", nil).Inspect(context.Background(), 42, "patient/1")
	if !errors.Is(err, ErrNotHeld) || st.LastToken != 9 || st.Resource != "patient/1" {
		t.Errorf("Inspect = %+v, %v, want ErrNotHeld with last token 9", st, err)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nobody listens there now
	_, err = New("http://"+addr, "tok", nil).Acquire(context.Background(), lockapi.AcquireRequest{})
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Acquire from a closed port err = %v, want ErrUnavailable", err)
	}

	// A lockd that does not answer in time is unreachable too.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer slow.Close()
	c := New(slow.URL, "tok", &http.Client{Timeout: 100 * time.Millisecond})
	t0 := time.Now()
	if _, err := c.Inspect(context.Background(), 42, "p/1"); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 3*time.Second {
		t.Errorf("Inspect of a silent lockd err = %v after %v, want ErrUnavailable with context.DeadlineExceeded after the client's timeout", err, time.Since(t0))
	}
	// The caller giving up is not lockd being unreachable.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := New(slow.URL, "tok", nil).Inspect(ctx, 42, "p/1"); err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("Inspect with a canceled context err = %v, want a non-unavailable error", err)
	}
}

// TestConnectionsReused: 16 goroutines releasing at once, one by one,
// through a client made with New(…, nil) open about 16 connections in all,
// not one per request (net/http's default keeps only 2 idle per host).
func TestConnectionsReused(t *testing.T) {
	var opened atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/locks/batch" { // a lockd without it: calls go one by one
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"code":"not_found","message":"no such endpoint"}`))
			return
		}
		_, _ = w.Write([]byte(`{"resource":"p/1","released":true}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := New(srv.URL, "tok", nil)
	const workers, each = 16, 50
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if err := c.Release(context.Background(), lockapi.ReleaseRequest{Resource: "p/1", Token: 1, Secret: "s"}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := opened.Load(); n > 2*workers {
		t.Errorf("%d connections opened for %d requests from %d goroutines, want at most %d", n, workers*each, workers, 2*workers)
	}
	t.Logf("%d connections for %d requests", opened.Load(), workers*each)
}

// TestQueuedCallGivesUp: while MaxInFlight requests hang, a further call
// queues; when its context ends it returns at once, and it is not sent
// afterwards.
func TestQueuedCallGivesUp(t *testing.T) {
	defer func(d time.Duration) { stallAfter = d }(stallAfter)
	stallAfter = time.Hour // the hanging requests do not count as stalled
	release := make(chan struct{})
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"resource":"p/1","released":true}`))
	}))
	defer srv.Close()
	c := New(srv.URL, "tok", nil)
	req := lockapi.ReleaseRequest{Resource: "p/1", Clinic: 1, Token: 1, Secret: "s"}
	var wg sync.WaitGroup
	for range MaxInFlight {
		wg.Go(func() {
			if err := c.Release(context.Background(), req); err != nil {
				t.Error(err)
			}
		})
	}
	// Wait until both requests are in flight.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.b.mu.Lock()
		n := c.b.inflight
		c.b.mu.Unlock()
		if n == MaxInFlight {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("requests not in flight")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err := c.Release(ctx, req)
	if !errors.Is(err, ErrUnavailable) || time.Since(t0) > 2*time.Second {
		t.Errorf("queued call past its deadline = %v after %v, want ErrUnavailable at once", err, time.Since(t0))
	}
	close(release)
	wg.Wait()
	// The sender skipped the abandoned call, and the slot is free again.
	time.Sleep(50 * time.Millisecond)
	if err := c.Release(context.Background(), req); err != nil {
		t.Errorf("a call after all that: %v", err)
	}
	if n := int(requests.Load()); n != MaxInFlight+1 {
		t.Errorf("%d requests, want %d: the abandoned call was sent", n, MaxInFlight+1)
	}
}

// TestStalledRequest: a request that hangs does not hold up the calls made
// after it: past stallAfter they go in a request of their own.
func TestStalledRequest(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), "p/hang") {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"resource":"p/1","released":true}`))
	}))
	defer srv.Close()
	c := New(srv.URL, "tok", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = c.Release(ctx, lockapi.ReleaseRequest{Resource: "p/hang", Clinic: 1, Token: 1, Secret: "s"})
	}()
	time.Sleep(stallAfter + 30*time.Millisecond)
	t0 := time.Now()
	free, stop := context.WithTimeout(context.Background(), 3*time.Second)
	defer stop()
	if err := c.Release(free, lockapi.ReleaseRequest{Resource: "p/free", Clinic: 1, Token: 1, Secret: "s"}); err != nil {
		t.Fatalf("a call behind a hanging request: %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("a call behind a hanging request took %v", d)
	}
}

// TestInlineTransport: a client over a plain *http.Client writes and reads
// its requests itself (HTTP/1.1, also over TLS); one whose transport is of
// its own, or sends lockd's address through a proxy, goes through its
// *http.Client.
func TestInlineTransport(t *testing.T) {
	skipWithoutInline(t)
	var proto atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto.Store(r.Proto)
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("Content-Type") != "application/json" ||
			r.Method != http.MethodPost || r.URL.Path != "/lockd/v1/locks/release" || !strings.Contains(string(b), `"resource":"p/1"`) {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"resource":"p/1","released":true}`))
	}))
	defer srv.Close()
	hc := srv.Client() // trusts the test certificate
	c := New(srv.URL+"/lockd/", "tok", hc)
	if c.in == nil {
		t.Fatal("New(https, plain client) uses no inline transport")
	}
	for range 3 {
		if err := c.Release(context.Background(), lockapi.ReleaseRequest{Resource: "p/1", Clinic: 1, Token: 1, Secret: "s"}); err != nil {
			t.Fatalf("Release over TLS: %v", err)
		}
	}
	if p := proto.Load(); p != "HTTP/1.1" {
		t.Errorf("request protocol %v, want HTTP/1.1", p)
	}
	c.CloseIdleConnections()

	proxied := hc.Transport.(*http.Transport).Clone()
	proxied.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: "127.0.0.1:1"})
	own := roundTripperFunc(func(r *http.Request) (*http.Response, error) { return hc.Transport.RoundTrip(r) })
	for name, hc := range map[string]*http.Client{"proxy": {Transport: proxied}, "own transport": {Transport: own}} {
		if New(srv.URL, "tok", hc).in != nil {
			t.Errorf("New(%s) uses the inline transport", name)
		}
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestInlineServerClosed: connections the server closed while they were
// kept (a lockd restarting) are not used again: every call succeeds, on a
// new connection.
func TestInlineServerClosed(t *testing.T) {
	skipWithoutInline(t)
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"resource":"p/1","released":true}`))
	}))
	defer srv.Close()
	c := New(srv.URL, "tok", nil)
	for i := range 5 {
		if err := c.Release(context.Background(), lockapi.ReleaseRequest{Resource: "p/1", Clinic: 1, Token: 1, Secret: "s"}); err != nil {
			t.Fatalf("Release %d after the server closed its connections: %v", i, err)
		}
		srv.CloseClientConnections()
	}
	if n := requests.Load(); n != 5 {
		t.Errorf("%d requests for 5 calls", n)
	}
}

// TestInlineCanceled: a caller giving up while its request is out returns
// at once with its context's error, not ErrUnavailable.
func TestInlineCanceled(t *testing.T) {
	skipWithoutInline(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := New(srv.URL, "tok", nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	t0 := time.Now()
	_, err := c.Inspect(ctx, 42, "p/1")
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) || time.Since(t0) > 3*time.Second {
		t.Errorf("Inspect canceled in flight = %v after %v, want context.Canceled at once", err, time.Since(t0))
	}
	ctx, stop := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer stop()
	_, err = c.Inspect(ctx, 42, "p/1")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Inspect past its deadline = %v, want ErrUnavailable with context.DeadlineExceeded", err)
	}
}

// TestInlineRedirect: an answer 3xx (a proxy's) makes the call go again
// through the *http.Client, which follows it.
func TestInlineRedirect(t *testing.T) {
	skipWithoutInline(t)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /old/v1/locks/release", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new/v1/locks/release", http.StatusPermanentRedirect)
	})
	mux.HandleFunc("POST /new/v1/locks/release", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(b), `"resource":"p/1"`) {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"resource":"p/1","released":true}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	if err := New(srv.URL+"/old", "tok", nil).Release(context.Background(), lockapi.ReleaseRequest{Resource: "p/1", Clinic: 1, Token: 1, Secret: "s"}); err != nil {
		t.Errorf("Release through a redirect: %v", err)
	}
}

func skipWithoutInline(t *testing.T) {
	t.Helper()
	if !canCheckConns {
		t.Skip("no inline transport on this platform")
	}
}

// TestInlineNotRepeated: a request that went out on a kept connection is
// not sent again when the connection then fails without an answer: the
// call may have run (an acquire sent twice could lock its caller out).
func TestInlineNotRepeated(t *testing.T) {
	skipWithoutInline(t)
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 2 { // the second request: drop the connection, no answer
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = c.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"resource":"p/1","released":true}`))
	}))
	defer srv.Close()
	c := New(srv.URL, "tok", nil)
	req := lockapi.ReleaseRequest{Resource: "p/1", Clinic: 1, Token: 1, Secret: "s"}
	if err := c.Release(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(context.Background(), req); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Release whose connection dropped = %v, want ErrUnavailable", err)
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("%d requests for 2 calls, want 2 (none repeated)", n)
	}
	if err := c.Release(context.Background(), req); err != nil {
		t.Errorf("Release after a dropped connection: %v", err)
	}
}
