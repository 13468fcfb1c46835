package amqpx

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Headers added to a dead-lettered message.
const (
	HeaderDeadReason = "x-scsync-dead-reason" // the handler's error text
	HeaderDeadQueue  = "x-scsync-dead-queue"  // the queue it was consumed from
	HeaderDeadAt     = "x-scsync-dead-at"     // RFC 3339 time of dead-lettering
	HeaderDeadUserID = "x-scsync-dead-user-id"
)

// maxReasonLen caps the reason header so a huge error cannot bloat messages.
const maxReasonLen = 4096

// Delivery is a received message.
type Delivery struct {
	Body            []byte
	ContentType     string
	ContentEncoding string
	Type            string
	MessageID       string
	UserID          string
	Exchange        string
	RoutingKey      string
	Headers         map[string]any
	Redelivered     bool
	Timestamp       time.Time
}

// Handler processes one delivery. nil acks it; an error marked with Poison
// (or a panic) dead-letters it; any other error requeues it after a pause.
// Handlers must be idempotent: a message can be delivered more than once.
type Handler func(ctx context.Context, d Delivery) error

// Consume runs h for every message of queue, one at a time and in order, on
// its own channel with Qos(Prefetch) and manual acks, re-subscribing after
// every reconnect. It blocks until ctx is done and then returns nil; it
// returns ErrClosed if the Client stops first.
//
// A nil result acks. A Poison error or a panic republishes the message (with
// confirm) to the queue's DeadLetterExchange under its original routing key,
// adding the x-scsync-dead-* headers, then acks; if that fails the message is
// requeued. A queue without a DeadLetterExchange rejects it without requeue.
// Any other error requeues the message after a short pause.
func (c *Client) Consume(ctx context.Context, queue string, h Handler) error {
	return c.consume(ctx, queue, func(ctx context.Context, s *session, ch *amqp.Channel, deliveries <-chan amqp.Delivery, d amqp.Delivery) {
		c.handle(ctx, s, queue, h, d)
	}, c.cfg.Prefetch)
}

// deliveryFunc handles the delivery d just received (and may take more from
// deliveries); it settles what it took.
type deliveryFunc func(ctx context.Context, s *session, ch *amqp.Channel, deliveries <-chan amqp.Delivery, d amqp.Delivery)

// consume is Consume with what is done with each delivery, and the prefetch.
func (c *Client) consume(ctx context.Context, queue string, f deliveryFunc, prefetch int) error {
	var stale *session
	attempt := 0
	for {
		s, err := c.waitReady(ctx, false, stale)
		if err != nil {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // a cancelled ctx is a normal stop
			}
			return err
		}
		subscribed, err := c.consumeOn(ctx, s, queue, f, prefetch)
		if ctx.Err() != nil {
			return nil //nolint:nilerr // a cancelled ctx is a normal stop
		}
		if subscribed {
			attempt = 0
		}
		if s.conn.IsClosed() {
			// Run is reconnecting (with its own backoff); wait for it.
			stale = s
			c.log.Warn("amqp consumer interrupted", "queue", queue, "err", err)
			continue
		}
		// The connection is fine but the subscription failed or was
		// cancelled (e.g. queue missing or deleted): retry with backoff.
		stale = nil
		delay := backoff(c.cfg.ReconnectMin, c.cfg.ReconnectMax, attempt)
		attempt++
		c.log.Warn("amqp consumer interrupted", "queue", queue, "err", err, "retry_in", delay)
		if !sleepCtx(ctx, delay) {
			return nil
		}
	}
}

// consumeOn subscribes on s and handles deliveries until the subscription or
// ctx ends. subscribed reports whether the subscription was established.
func (c *Client) consumeOn(ctx context.Context, s *session, queue string, f deliveryFunc, prefetch int) (subscribed bool, err error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open consumer channel: %w", err)
	}
	// Closing the channel hands unacked deliveries back to the queue.
	defer func() { _ = ch.Close() }()
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return false, fmt.Errorf("set prefetch: %w", err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	c.log.Info("amqp consumer started", "queue", queue)
	if c.cfg.OnSubscribe != nil {
		c.cfg.OnSubscribe(queue)
	}
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case d, ok := <-deliveries:
			if !ok {
				select {
				case e := <-closes:
					if e != nil {
						return true, fmt.Errorf("channel closed: %w", e)
					}
				default:
				}
				return true, fmt.Errorf("subscription ended: %w", ErrClosed)
			}
			f(ctx, s, ch, deliveries, d)
		}
	}
}

// handle runs h on d and settles d. Ack/nack errors are ignored: they mean
// the channel is gone, and the broker will redeliver.
func (c *Client) handle(ctx context.Context, s *session, queue string, h Handler, d amqp.Delivery) {
	err := c.runHandler(ctx, queue, h, d)
	switch {
	case err == nil:
		_ = d.Ack(false)
		c.m.consumed.WithLabelValues(resultAck).Inc()
	case IsPoison(err):
		c.deadLetter(ctx, s, queue, d, err)
	default:
		c.log.Warn("amqp handler failed, requeueing", "queue", queue, "message_id", d.MessageId, "err", err)
		sleepCtx(ctx, c.retryPause)
		_ = d.Nack(false, true)
		c.m.consumed.WithLabelValues(resultRetry).Inc()
	}
}

// runHandler calls h, turning a panic into a poison error.
func (c *Client) runHandler(ctx context.Context, queue string, h Handler, d amqp.Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("amqp handler panicked", "queue", queue, "message_id", d.MessageId, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = Poison(fmt.Errorf("handler panic: %v", r))
		}
	}()
	return h(ctx, delivery(d))
}

// delivery is d as handlers see it.
func delivery(d amqp.Delivery) Delivery {
	return Delivery{
		Body:            d.Body,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		Type:            d.Type,
		MessageID:       d.MessageId,
		UserID:          d.UserId,
		Exchange:        d.Exchange,
		RoutingKey:      d.RoutingKey,
		Headers:         maps.Clone(map[string]any(d.Headers)),
		Redelivered:     d.Redelivered,
		Timestamp:       d.Timestamp,
	}
}

// deadLetter moves a poison message to the queue's dead-letter exchange.
func (c *Client) deadLetter(ctx context.Context, s *session, queue string, d amqp.Delivery, cause error) {
	dlx := c.deadLetterExchange(queue)
	if dlx == "" {
		c.log.Error("amqp poison message dropped, queue has no dead-letter exchange", "queue", queue, "message_id", d.MessageId, "err", cause)
		_ = d.Nack(false, false)
		c.m.consumed.WithLabelValues(resultPoison).Inc()
		return
	}
	c.deadLetterTo(ctx, s, queue, dlx, d, cause)
}

// deadLetterTo republishes d to dlx with the reason headers and acks it;
// when that fails it requeues d (after a pause) and returns false.
func (c *Client) deadLetterTo(ctx context.Context, s *session, queue, dlx string, d amqp.Delivery, cause error) bool {
	reason := cause.Error()
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	headers := maps.Clone(map[string]any(d.Headers))
	if headers == nil {
		headers = map[string]any{}
	}
	headers[HeaderDeadReason] = reason
	headers[HeaderDeadQueue] = queue
	headers[HeaderDeadAt] = time.Now().UTC().Format(time.RFC3339)
	if d.UserId != "" {
		// The broker only accepts a user-id equal to our own login, and the
		// original publisher may be another user: keep it as a header.
		headers[HeaderDeadUserID] = d.UserId
	}
	m := Message{
		Body:            d.Body,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		Type:            d.Type,
		MessageID:       cmp.Or(d.MessageId, newMessageID()),
		Headers:         headers,
		Timestamp:       d.Timestamp,
	}
	err := c.publishDead(ctx, s, dlx, d.RoutingKey, m)
	if err != nil {
		c.log.Error("amqp dead-lettering failed, requeueing", "queue", queue, "dead_letter_exchange", dlx, "message_id", d.MessageId, "err", err)
		sleepCtx(ctx, c.retryPause)
		_ = d.Nack(false, true)
		c.m.consumed.WithLabelValues(resultRetry).Inc()
		return false
	}
	c.log.Warn("amqp message dead-lettered", "queue", queue, "dead_letter_exchange", dlx, "message_id", d.MessageId, "reason", reason)
	_ = d.Ack(false)
	c.m.consumed.WithLabelValues(resultPoison).Inc()
	return true
}

// publishDead publishes on s (the connection the delivery came from; acking
// on another is impossible), waiting while the broker blocks us.
func (c *Client) publishDead(ctx context.Context, s *session, exchange, key string, m Message) error {
	cur, err := c.waitReady(ctx, true, nil)
	if err != nil {
		return err
	}
	if cur != s {
		return ErrClosed
	}
	reason, err := c.publishConfirmed(ctx, s, exchange, key, m)
	return c.published(exchange, key, reason, err)
}

// sleepCtx sleeps for d or until ctx is done; it reports whether it slept fully.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
