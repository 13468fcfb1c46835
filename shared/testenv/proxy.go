package testenv

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on loopback in front of one address, so a test can cut
// one client's link (a clinic going offline) while everything else keeps its
// direct connection.
type Proxy struct {
	ln      net.Listener
	targets []string

	mu    sync.Mutex
	cut   bool
	delay time.Duration // added to every chunk forwarded (SetDelay)
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy listens on a free loopback port and forwards to the first of
// targets that accepts a connection (a fail-over load balancer in front of
// replicas), until the test ends.
func NewProxy(t testing.TB, targets ...string) *Proxy {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, targets: targets, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut drops every open connection and refuses new ones (they are accepted
// and closed at once, like a link that is down) until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.cut {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	var up net.Conn
	var err error
	for _, target := range p.targets {
		if up, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(context.Background(), "tcp", target); err == nil {
			break
		}
	}
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, true) || !p.track(up, true) {
		_ = c.Close()
		_ = up.Close()
		p.track(c, false)
		return
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			_ = c.Close()
			_ = up.Close()
			p.track(c, false)
			p.track(up, false)
		})
	}
	go func() {
		_, _ = p.copy(up, c)
		done()
	}()
	_, err = p.copy(c, up)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		_ = err // the link broke: the same as a close
	}
	done()
}

func (p *Proxy) close() {
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}
