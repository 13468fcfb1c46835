package amqpx

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// QueueState is what a passive declare tells of a queue.
type QueueState struct {
	// Messages is the number of messages ready for delivery (not those
	// delivered and not yet acknowledged).
	Messages int
	// Consumers is the number of consumers subscribed to it.
	Consumers int
}

// IsPreconditionFailed reports whether err is the broker's
// PRECONDITION_FAILED (406): for a declare, a queue that exists with other
// arguments (for example another x-queue-type).
func IsPreconditionFailed(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed
}

// IsNotFound reports whether err is the broker's NOT_FOUND (404).
func IsNotFound(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound
}

// DeclareOnce declares t now, like Declare, but does not remember it: it is
// not declared again after a reconnect. For the many per-tenant objects a
// long-lived client creates once (they are durable), so a reconnect does not
// re-declare thousands of them.
func (c *Client) DeclareOnce(ctx context.Context, t Topology) error {
	if err := t.validate(); err != nil {
		return err
	}
	return c.onChannel(ctx, func(ch *amqp.Channel) error { return declare(ch, t) })
}

// Inspect returns the state of queue, or exists=false when there is no
// such queue (a passive declare: it creates nothing).
func (c *Client) Inspect(ctx context.Context, queue string) (st QueueState, exists bool, err error) {
	err = c.onChannel(ctx, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return err
		}
		st, exists = QueueState{Messages: q.Messages, Consumers: q.Consumers}, true
		return nil
	})
	if IsNotFound(err) {
		return QueueState{}, false, nil
	}
	return st, exists, err
}

// Unbind removes a binding (removing one that does not exist is no error).
func (c *Client) Unbind(ctx context.Context, b Binding) error {
	return c.onChannel(ctx, func(ch *amqp.Channel) error {
		if err := ch.QueueUnbind(b.Queue, b.Key, b.Exchange, nil); err != nil {
			return fmt.Errorf("unbind queue %q from exchange %q key %q: %w", b.Queue, b.Exchange, b.Key, err)
		}
		return nil
	})
}

// DeleteQueue deletes queue and every message in it (deleting a queue that
// does not exist is no error) and returns how many messages it held.
func (c *Client) DeleteQueue(ctx context.Context, queue string) (int, error) {
	var n int
	err := c.onChannel(ctx, func(ch *amqp.Channel) error {
		var err error
		n, err = ch.QueueDelete(queue, false, false, false)
		if err != nil {
			return fmt.Errorf("delete queue %q: %w", queue, err)
		}
		return nil
	})
	if IsNotFound(err) {
		return 0, nil
	}
	return n, err
}

// Drain consumes queue's messages one at a time and settles each like
// Consume does — acked after h returns nil; on a Poison error or a panic,
// republished with confirm to deadLetterExchange with the reason and then
// acked — until no message has come for a moment and the queue has no
// ready message; it returns how many it took. A transient handler error
// requeues the message and ends the drain with that error (call again
// later). Unlike Consume it does not wait for more: it is for emptying a
// queue nothing routes to any more. (It subscribes rather than using
// basic.get, which single-active-consumer queues refuse; on such a queue
// it takes nothing while another consumer is the active one.)
func (c *Client) Drain(ctx context.Context, queue, deadLetterExchange string, h Handler) (int, error) {
	s, err := c.waitReady(ctx, false, nil)
	if err != nil {
		return 0, err
	}
	ch, err := s.conn.Channel()
	if err != nil {
		return 0, fmt.Errorf("open drain channel: %w", err)
	}
	// Closing the channel hands an unsettled delivery back to the queue.
	defer func() { _ = ch.Close() }()
	if err := ch.Qos(1, 0, false); err != nil {
		return 0, fmt.Errorf("set prefetch: %w", err)
	}
	tag := "drain-" + newMessageID()
	deliveries, err := ch.Consume(queue, tag, false, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("subscribe to %q: %w", queue, err)
	}
	n := 0
	settle := func(d amqp.Delivery) error {
		herr := c.runHandler(ctx, queue, h, d)
		switch {
		case herr == nil:
			if err := d.Ack(false); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
			c.m.consumed.WithLabelValues(resultAck).Inc()
		case IsPoison(herr) && deadLetterExchange != "":
			if !c.deadLetterTo(ctx, s, queue, deadLetterExchange, d, herr) {
				return fmt.Errorf("dead-letter a message of %q: not confirmed", queue)
			}
		case IsPoison(herr):
			_ = d.Nack(false, false)
			c.m.consumed.WithLabelValues(resultPoison).Inc()
		default:
			_ = d.Nack(false, true)
			c.m.consumed.WithLabelValues(resultRetry).Inc()
			return herr
		}
		n++
		return nil
	}
	idle := time.NewTicker(drainIdle)
	defer idle.Stop()
	quiet := false
	for {
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case d, ok := <-deliveries:
			if !ok {
				return n, fmt.Errorf("drain %q: subscription ended: %w", queue, ErrClosed)
			}
			quiet = false
			if err := settle(d); err != nil {
				return n, err
			}
		case <-idle.C:
			if !quiet {
				quiet = true // nothing for a whole tick: look at the queue
				continue
			}
			st, exists, err := c.Inspect(ctx, queue)
			if err != nil {
				return n, err
			}
			if exists && st.Messages > 0 {
				continue
			}
			// No message is ready: stop the subscription, and settle what
			// the broker sent before it stopped (a message on its way to
			// us is not counted as ready).
			if err := ch.Cancel(tag, false); err != nil {
				return n, fmt.Errorf("cancel drain of %q: %w", queue, err)
			}
			for d := range deliveries {
				if err := settle(d); err != nil {
					return n, err
				}
			}
			return n, nil
		}
	}
}

// drainIdle is how long Drain waits for a message before looking whether
// the queue is empty.
const drainIdle = 100 * time.Millisecond

// onChannel runs f on a short-lived channel of the current connection,
// again on the next connection if this one is lost meanwhile. A channel
// error (the broker closes the channel) is returned as is.
func (c *Client) onChannel(ctx context.Context, f func(ch *amqp.Channel) error) error {
	var stale *session
	for {
		s, err := c.waitReady(ctx, false, stale)
		if err != nil {
			return err
		}
		ch, err := s.conn.Channel()
		if err == nil {
			err = f(ch)
			_ = ch.Close()
		}
		if err == nil || !s.conn.IsClosed() {
			return err
		}
		stale = s
	}
}
