package testenv

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestPrivateMinIORestart(t *testing.T) {
	m := StartPrivateMinIO(t)
	live := func() error {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, m.Endpoint+"/minio/health/live", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	if err := live(); err != nil {
		t.Fatalf("after start: %v", err)
	}
	m.Kill()
	if err := live(); err == nil {
		t.Fatal("MinIO answered while killed")
	}
	m.Start()
	if err := live(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

func TestProxyDelay(t *testing.T) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveEach(ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
	p := NewProxy(t, ln.Addr().String())
	roundTrip := func() time.Duration {
		c, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	p.SetDelay(150 * time.Millisecond)
	if d := roundTrip(); d < 300*time.Millisecond {
		t.Errorf("round trip with a 150ms delay each way = %s, want >= 300ms", d)
	}
	p.SetDelay(0)
	if d := roundTrip(); d > 250*time.Millisecond {
		t.Errorf("round trip without delay = %s, want well under 300ms", d)
	}
}

// serveEach accepts on ln until it is closed and runs handle on each
// connection in its own goroutine, closing the connection after.
func serveEach(ln net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				handle(c)
				_ = c.Close()
			}()
		}
	}()
}
