package amqpx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// maxUnsentRetries bounds how often Publish retries by itself when the
// message provably never left the client (channel or connection gone).
const maxUnsentRetries = 10

// Message is what Publish sends. It is always persistent and mandatory.
type Message struct {
	Body            []byte
	ContentType     string
	ContentEncoding string
	Type            string
	MessageID       string // generated if empty; correlates basic.return
	UserID          string // AMQP user-id; the broker checks it equals the connection's user
	Headers         map[string]any
	Timestamp       time.Time // time.Now() if zero
	// Expiration is the message's time-to-live in a queue (0: none); the
	// broker drops it unread after that.
	Expiration time.Duration
	// Transient publishes with delivery mode 1: the broker keeps the message
	// in memory only (a restart loses it) and a classic queue holding it keeps
	// no file open. For messages another path recovers (the clinics' down
	// messages: the change log and its pull API) or that expire anyway.
	Transient bool
}

// Publish sends m to exchange with routing key and returns nil only after the
// broker confirmed it. It waits for a connection, and while the broker blocks
// publishing, until ctx is done. Errors: ErrNacked, ErrUnroutable (no queue
// matched), ErrClosed (connection or channel lost before the confirm; the
// message may or may not have been enqueued), ErrConfirmTimeout, or ctx's
// error. When the message provably never left the client, Publish retries by
// itself (on the next connection if need be). Safe for concurrent use;
// concurrent calls share a channel and do not wait for each other's confirms.
// MessageID correlates a basic.return with its Publish, so concurrent
// publishes should not share one.
func (c *Client) Publish(ctx context.Context, exchange, key string, m Message) error {
	if m.MessageID == "" {
		m.MessageID = newMessageID()
	}
	if m.Timestamp.IsZero() {
		m.Timestamp = time.Now()
	}
	var stale *session
	for attempt := 1; ; attempt++ {
		s, err := c.waitReady(ctx, true, stale)
		if err != nil {
			reason := reasonCanceled
			if isClosedErr(err) {
				reason = reasonClosed
			}
			return c.published(exchange, key, reason, err)
		}
		reason, err := c.publishConfirmed(ctx, s, exchange, key, m)
		if errors.Is(err, errNotSent) && attempt < maxUnsentRetries && ctx.Err() == nil {
			// Nothing reached the broker, so trying again cannot duplicate.
			if s.conn.IsClosed() {
				stale = s // wait for Run to reconnect
			}
			continue
		}
		return c.published(exchange, key, reason, err)
	}
}

// published counts the outcome of a publish and returns err with context.
func (c *Client) published(exchange, key, reason string, err error) error {
	if err != nil {
		c.m.publishFailures.WithLabelValues(reason).Inc()
		return fmt.Errorf("publish to exchange %q key %q: %w", exchange, key, err)
	}
	c.m.published.Inc()
	return nil
}

// publishConfirmed returns the metric reason with any error.
func (c *Client) publishConfirmed(ctx context.Context, s *session, exchange, key string, m Message) (string, error) {
	p, err := s.publisher()
	if err != nil {
		return reasonClosed, fmt.Errorf("%w: %w", errNotSent, err)
	}
	p.track(m.MessageID)
	defer p.untrack(m.MessageID)

	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, amqp.Publishing{
		Headers:         amqp.Table(m.Headers),
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		DeliveryMode:    deliveryMode(m.Transient),
		MessageId:       m.MessageID,
		Timestamp:       m.Timestamp,
		Type:            m.Type,
		UserId:          m.UserID,
		Expiration:      expiration(m.Expiration),
		Body:            m.Body,
	})
	switch {
	case err == nil && dc != nil:
	case ctx.Err() != nil:
		return reasonCanceled, ctx.Err()
	case err == nil || isClosedErr(err) || p.ch.IsClosed():
		return reasonClosed, fmt.Errorf("%w: %w", errNotSent, p.closedErr(err))
	default:
		return reasonInvalid, err // e.g. a header value AMQP cannot carry
	}

	timer := time.NewTimer(c.cfg.ConfirmTimeout)
	defer timer.Stop()
	select {
	case <-dc.Done():
	case <-ctx.Done():
		return reasonCanceled, ctx.Err()
	case <-timer.C:
		return reasonTimeout, ErrConfirmTimeout
	}
	if !dc.Acked() {
		// amqp091 completes pending confirms with ack=false when the channel
		// or connection closes; that is a loss of the channel, not a nack.
		if p.ch.IsClosed() {
			return reasonClosed, p.closedErr(nil)
		}
		return reasonNack, ErrNacked
	}
	if p.returned(m.MessageID) {
		return reasonUnroutable, ErrUnroutable
	}
	return "", nil
}

// publisher is one confirm-mode channel shared by all publishers of a
// session. Its loop drains basic.return (and the channel's close reason) so
// the connection's reader never waits on us.
type publisher struct {
	ch      *amqp.Channel
	barrier chan struct{}
	done    chan struct{}

	mu       sync.Mutex
	pending  map[string]int  // message id -> publishes awaiting their outcome
	bounced  map[string]bool // pending message ids that came back as basic.return
	closeErr error
}

// publisher returns the session's publishing channel, opening a new one if
// the broker closed the last (a channel error does not end the connection).
func (s *session) publisher() (*publisher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return nil, ErrClosed
	}
	if s.pub != nil && !s.pub.ch.IsClosed() {
		return s.pub, nil
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open publisher channel: %w: %w", err, ErrClosed)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enable publisher confirms: %w: %w", err, ErrClosed)
	}
	p := &publisher{
		ch:      ch,
		barrier: make(chan struct{}),
		done:    make(chan struct{}),
		pending: map[string]int{},
		bounced: map[string]bool{},
	}
	// Unbuffered on purpose: the broker sends basic.return before the
	// basic.ack of the same message, and amqp091's reader hands the return
	// over before it processes the ack. Receiving it unbuffered means our
	// loop holds the return before the confirm can complete; returned()
	// then syncs with the loop through barrier. See returned.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		p.loop(returns, closes)
	}()
	s.pub = p
	return p, nil
}

func (p *publisher) loop(returns <-chan amqp.Return, closes <-chan *amqp.Error) {
	defer close(p.done)
	for returns != nil || closes != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			p.mu.Lock()
			if p.pending[r.MessageId] > 0 {
				p.bounced[r.MessageId] = true
			}
			p.mu.Unlock()
		case e, ok := <-closes:
			if !ok {
				closes = nil
				continue
			}
			if e != nil {
				p.mu.Lock()
				p.closeErr = e
				p.mu.Unlock()
			}
		case <-p.barrier:
		}
	}
}

func (p *publisher) track(id string) {
	p.mu.Lock()
	p.pending[id]++
	p.mu.Unlock()
}

func (p *publisher) untrack(id string) {
	p.mu.Lock()
	if p.pending[id]--; p.pending[id] <= 0 {
		delete(p.pending, id)
		delete(p.bounced, id)
	}
	p.mu.Unlock()
}

// returned reports whether a confirmed message came back as basic.return.
// The return was handed to loop before the ack completed the confirm, so once
// loop accepts a barrier (or has exited) it has recorded the return.
func (p *publisher) returned(id string) bool {
	select {
	case p.barrier <- struct{}{}:
	case <-p.done:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bounced[id]
}

// closedErr wraps ErrClosed with the broker's reason when we know it. The
// channel is closed: amqp091 queues the reason for loop before it fails
// pending confirms and closes loop's inputs, so loop ends promptly.
func (p *publisher) closedErr(cause error) error {
	t := time.NewTimer(time.Second)
	select {
	case <-p.done:
	case <-t.C:
	}
	t.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closeErr != nil:
		return fmt.Errorf("channel closed: %w: %w", p.closeErr, ErrClosed)
	case cause != nil && !isClosedErr(cause):
		return fmt.Errorf("%w: %w", cause, ErrClosed)
	}
	return ErrClosed
}

func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// expiration is the AMQP expiration property for d: milliseconds, "" for none.
func expiration(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10)
}

// deliveryMode is the AMQP delivery mode of a message (Message.Transient).
func deliveryMode(transient bool) uint8 {
	if transient {
		return amqp.Transient
	}
	return amqp.Persistent
}
