package amqpx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/testenv"
)

// TestBlocked drives the connection.blocked handling with a fake
// notification channel: a shared broker must never be pushed into an alarm.
func TestBlocked(t *testing.T) {
	t.Parallel()
	c, err := New(Config{URL: testURL}, Topology{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &session{} // no connection: Publish must not get as far as using it
	c.mu.Lock()
	c.sess = s
	c.mu.Unlock()
	blocks := make(chan amqp.Blocking)
	s.wg.Add(1)
	go c.watchBlocked(s, blocks)

	if err := c.Ready(); err != nil {
		t.Fatalf("Ready() = %v, want nil", err)
	}
	blocks <- amqp.Blocking{Active: true, Reason: "low on memory"}
	testenv.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if !c.Blocked() {
			return errors.New("Blocked() = false, want true")
		}
		return nil
	})
	if err := c.Ready(); !errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), "low on memory") {
		t.Errorf("Ready() = %v, want ErrBlocked with the reason", err)
	}
	if got := c.m.blocked; testGauge(got) != 1 {
		t.Errorf("blocked gauge = %v, want 1", testGauge(got))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Publish(ctx, "ex", "k", Message{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish() while blocked = %v, want it to wait until the deadline", err)
	}

	// Once unblocked, waiters are released.
	released := make(chan *session, 1)
	go func() {
		s, _ := c.waitReady(context.Background(), true, nil)
		released <- s
	}()
	blocks <- amqp.Blocking{Active: false}
	select {
	case got := <-released:
		if got != s {
			t.Errorf("waitReady() = %p, want the session %p", got, s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitReady() still waiting after connection.unblocked")
	}
	if c.Blocked() || c.Ready() != nil || testGauge(c.m.blocked) != 0 {
		t.Errorf("after unblock: Blocked() = %v, Ready() = %v, gauge %v; want false, nil, 0", c.Blocked(), c.Ready(), testGauge(c.m.blocked))
	}
	close(blocks)
	s.wg.Wait()
}

// TestRunWithoutBroker: while the broker is unreachable, Run keeps retrying,
// Ready says why, Publish waits (bounded by its ctx), and cancel stops Run.
func TestRunWithoutBroker(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now: dials are refused

	c, err := New(Config{URL: "amqp://guest:secret@" + addr + "/", ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond}, Topology{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if err := c.Ready(); !errors.Is(err, ErrNotConnected) || !strings.Contains(err.Error(), "refused") {
			return fmt.Errorf("Ready() = %w, want ErrNotConnected with the dial error", err)
		}
		return nil
	})
	if err := c.Ready(); strings.Contains(err.Error(), "secret") {
		t.Errorf("Ready() = %v leaks the password", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer pcancel()
	if err := c.Publish(pctx, "ex", "k", Message{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish() while disconnected = %v, want context.DeadlineExceeded", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run() did not return within 2s of cancel")
	}
	if err := c.Ready(); !errors.Is(err, ErrClosed) {
		t.Errorf("Ready() after Run = %v, want ErrClosed", err)
	}
}
