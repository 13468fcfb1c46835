// Package amqpx is scsync's RabbitMQ client, built on amqp091-go, which does
// not reconnect by itself. A Client keeps one connection alive (reconnecting
// with jittered exponential backoff), re-declares its durable topology after
// every reconnect, publishes persistent mandatory messages and reports success
// only once the broker confirmed them, and runs consumers with manual acks
// that survive reconnects and move poison messages to a dead-letter exchange
// with the reason. It honours connection.blocked and never crashes on a
// handler panic.
//
// A Client is driven by Run; Publish, Consume and Declare may be called from
// any goroutine before or while Run runs, and wait for a connection.
package amqpx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	// dialTimeout bounds TCP connect plus the AMQP handshake.
	dialTimeout = 30 * time.Second
	// closeTimeout bounds the connection.close handshake on shutdown.
	closeTimeout = 5 * time.Second
	// stableAfter is how long a connection must have lived for the next
	// reconnect to start again from the smallest backoff.
	stableAfter = 10 * time.Second
	// defaultRetryPause is how long a consumer waits before requeueing a
	// message whose handler failed transiently, so it does not hot-loop.
	defaultRetryPause = time.Second
)

// Client is a self-healing RabbitMQ connection. Create it with New, drive it
// with Run.
type Client struct {
	cfg        Config
	url        string // redacted, for logs
	log        *slog.Logger
	m          *metrics
	retryPause time.Duration

	running atomic.Bool
	// declMu serialises topology declaration between Declare and the
	// reconnect path, so no Declare'd topology is missed by a new connection.
	declMu sync.Mutex

	mu      sync.Mutex
	topos   []Topology    // initial, then every successful Declare
	sess    *session      // current connection; nil while disconnected
	lastErr error         // why we are disconnected, for Ready
	closed  bool          // Run has returned
	changed chan struct{} // closed and replaced on every state change
}

// session is one live connection and what hangs off it.
type session struct {
	conn *amqp.Connection

	// guarded by Client.mu
	blocked     bool
	blockReason string

	mu   sync.Mutex
	dead bool
	pub  *publisher
	wg   sync.WaitGroup // goroutines tied to conn
}

// New validates cfg and topo, applies defaults, and registers metrics on reg
// (which may be nil). It does not connect; Run does. log may be nil.
func New(cfg Config, topo Topology, log *slog.Logger, reg prometheus.Registerer) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// The client's own copy, taken before any goroutine runs: the caller's
	// config may be handed to HTTP transports too, which write to it.
	cfg.TLS = cfg.TLS.Clone()
	if err := topo.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg, cfg.ConnectionName)
	if err != nil {
		return nil, err
	}
	return &Client{
		cfg:        cfg,
		url:        redactURL(cfg.URL),
		log:        log,
		m:          m,
		retryPause: defaultRetryPause,
		topos:      []Topology{topo},
		changed:    make(chan struct{}),
	}, nil
}

// Run connects, declares the topology and keeps the connection alive,
// reconnecting with backoff and jitter whenever it drops, until ctx is done.
// It then closes the connection and returns nil. Run may be called once;
// after it returns, Publish, Declare and Consume return ErrClosed.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errRunning
	}
	defer c.setClosed()
	attempt := 0
	connects := 0
	for {
		start := time.Now()
		s, closes, err := c.connect(ctx)
		msg := "amqp connect failed"
		if err == nil {
			connects++
			if connects > 1 {
				c.m.reconnects.Inc()
				c.log.Info("amqp reconnected", "url", c.url, "reconnects", connects-1)
			} else {
				c.log.Info("amqp connected", "url", c.url)
			}
			err = c.serve(ctx, s, closes)
			msg = "amqp connection lost"
			if time.Since(start) >= stableAfter {
				attempt = 0
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		c.setDisconnected(err)
		delay := backoff(c.cfg.ReconnectMin, c.cfg.ReconnectMax, attempt)
		attempt++
		c.log.Warn(msg, "url", c.url, "err", err, "attempt", attempt, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// connect dials, declares all remembered topology and makes the new session
// current. closes reports the connection's end.
func (c *Client) connect(ctx context.Context) (*session, <-chan *amqp.Error, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	// Nothing below is context-aware; closing the connection unblocks it.
	stop := context.AfterFunc(ctx, func() { _ = conn.CloseDeadline(time.Now().Add(closeTimeout)) })
	defer stop()

	s := &session{conn: conn}
	closes := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	s.wg.Add(1)
	go c.watchBlocked(s, blocks)

	c.declMu.Lock()
	defer c.declMu.Unlock()
	c.mu.Lock()
	topos := slices.Clone(c.topos)
	c.mu.Unlock()
	if err := declareAll(conn, topos); err != nil {
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		s.stop()
		return nil, nil, err
	}

	c.mu.Lock()
	c.sess = s
	c.lastErr = nil
	c.m.connected.Set(1)
	c.m.blocked.Set(boolGauge(s.blocked))
	c.broadcast()
	c.mu.Unlock()
	return s, closes, nil
}

// dial opens a connection whose TCP connect and handshake end early when
// ctx is done.
func (c *Client) dial(ctx context.Context) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	if c.cfg.ConnectionName != "" {
		props.SetClientConnectionName(c.cfg.ConnectionName)
	}
	var stop func() bool
	conn, err := amqp.DialConfig(c.cfg.URL, amqp.Config{
		Heartbeat:  c.cfg.Heartbeat,
		Properties: props,
		// A copy: amqp091 writes the broker's host into ServerName of the
		// config it is given, and the caller's config is shared with its
		// HTTPS clients, which would then check the cloud's certificate
		// against the broker's name (and race with it).
		TLSClientConfig: c.cfg.TLS.Clone(),
		Locale:          "en_US",
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			nc, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// amqp091 clears this deadline once the handshake is done.
			if err := nc.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
				_ = nc.Close()
				return nil, err
			}
			stop = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
			return nc, nil
		},
	})
	if stop != nil {
		stop()
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.url, err)
	}
	return conn, nil
}

// serve waits until the connection drops or ctx is done, then tears the
// session down.
func (c *Client) serve(ctx context.Context, s *session, closes <-chan *amqp.Error) error {
	var err error
	select {
	case <-ctx.Done():
		c.setDisconnected(ErrClosed)
		_ = s.conn.CloseDeadline(time.Now().Add(closeTimeout))
		err = ctx.Err()
	case e, ok := <-closes:
		if ok && e != nil {
			err = e
		} else {
			err = ErrClosed
		}
		c.setDisconnected(err)
		_ = s.conn.Close() // already closed; makes sure every resource is released
	}
	s.stop()
	return err
}

func (c *Client) watchBlocked(s *session, blocks <-chan amqp.Blocking) {
	defer s.wg.Done()
	for b := range blocks {
		if b.Active {
			c.log.Warn("amqp connection blocked", "url", c.url, "reason", b.Reason)
		} else {
			c.log.Info("amqp connection unblocked", "url", c.url)
		}
		c.mu.Lock()
		s.blocked, s.blockReason = b.Active, b.Reason
		if c.sess == s {
			c.m.blocked.Set(boolGauge(b.Active))
		}
		c.broadcast()
		c.mu.Unlock()
	}
}

// stop marks the session dead and waits for its goroutines; the connection
// must already be closed.
func (s *session) stop() {
	s.mu.Lock()
	s.dead = true
	s.mu.Unlock()
	s.wg.Wait()
}

// broadcast wakes everyone in waitReady. Caller holds c.mu.
func (c *Client) broadcast() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) setDisconnected(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = nil
	c.lastErr = err
	c.m.connected.Set(0)
	c.m.blocked.Set(0)
	c.broadcast()
}

func (c *Client) setClosed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = nil
	c.closed = true
	c.lastErr = ErrClosed
	c.m.connected.Set(0)
	c.m.blocked.Set(0)
	c.broadcast()
}

// waitReady returns the current session once there is one other than stale
// (and, with unblocked, one the broker does not block), or an error when ctx
// ends or the Client stopped.
func (c *Client) waitReady(ctx context.Context, unblocked bool, stale *session) (*session, error) {
	for {
		c.mu.Lock()
		s, closed, changed := c.sess, c.closed, c.changed
		ok := s != nil && s != stale && (!unblocked || !s.blocked)
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if ok {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for amqp connection: %w", ctx.Err())
		case <-changed:
		}
	}
}

// Ready returns nil while connected and not blocked, otherwise an error that
// says why (wrapping ErrNotConnected, ErrBlocked or ErrClosed). For /readyz.
func (c *Client) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.sess == nil && c.lastErr != nil:
		return fmt.Errorf("%w: %w", ErrNotConnected, c.lastErr)
	case c.sess == nil:
		return ErrNotConnected
	case c.sess.blocked:
		return fmt.Errorf("%w: %s", ErrBlocked, c.sess.blockReason)
	}
	return nil
}

// Blocked reports whether the broker blocked the connection
// (connection.blocked, typically a memory or disk alarm) and has not yet
// unblocked it. Publish waits while this is true.
func (c *Client) Blocked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil && c.sess.blocked
}

// Declare declares t now, waiting for a connection if there is none, and
// remembers it so it is declared again after every reconnect. A topology the
// broker rejects (e.g. a queue redeclared with other arguments) is returned
// as an error and not remembered.
func (c *Client) Declare(ctx context.Context, t Topology) error {
	if err := t.validate(); err != nil {
		return err
	}
	var stale *session
	for {
		s, err := c.waitReady(ctx, false, stale)
		if err != nil {
			return err
		}
		err = c.declareOn(s, t)
		if err == nil {
			return nil
		}
		if !s.conn.IsClosed() {
			return err
		}
		stale = s // lost the connection meanwhile: try again on the next one
	}
}

func (c *Client) declareOn(s *session, t Topology) error {
	c.declMu.Lock()
	defer c.declMu.Unlock()
	c.mu.Lock()
	current := c.sess == s
	c.mu.Unlock()
	if !current {
		// A reconnect happened since waitReady. Mark closed for the retry.
		return fmt.Errorf("declare: %w", ErrClosed)
	}
	if err := declareAll(s.conn, []Topology{t}); err != nil {
		return err
	}
	c.mu.Lock()
	c.topos = append(c.topos, t)
	c.mu.Unlock()
	return nil
}

// declareAll declares ts on a short-lived channel of conn.
func declareAll(conn *amqp.Connection, ts []Topology) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel for declare: %w", err)
	}
	for _, t := range ts {
		if err := declare(ch, t); err != nil {
			return err // the broker closed ch
		}
	}
	_ = ch.Close()
	return nil
}

// deadLetterExchange returns the DeadLetterExchange of the last Topology
// entry for queue, or "".
func (c *Client) deadLetterExchange(queue string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.topos) - 1; i >= 0; i-- {
		for _, q := range c.topos[i].Queues {
			if q.Name == queue {
				return q.DeadLetterExchange
			}
		}
	}
	return ""
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// isClosedErr reports whether err means the channel or connection is gone.
func isClosedErr(err error) bool {
	return errors.Is(err, amqp.ErrClosed) || errors.Is(err, ErrClosed)
}
