package amqpx

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// batchGap is how long ConsumeBatch waits for a next delivery before it
// hands over what it has: what a lone message waits at a low rate.
const batchGap = time.Millisecond

// batchWait bounds how long ConsumeBatch gathers a batch while deliveries
// keep trickling in.
const batchWait = 5 * time.Millisecond

// BatchHandler processes deliveries taken together, in queue order, and
// returns one result per delivery, each meaning what a Handler's result
// means (nil acks, Poison dead-letters, another error requeues). A result
// slice of the wrong length requeues the whole batch.
type BatchHandler func(ctx context.Context, ds []Delivery) []error

// ConsumeBatch is Consume for handlers that gain from taking many messages
// at once (one database transaction for all of them): after each delivery
// it takes those the broker has already sent, up to size, and hands them to
// h together. The channel's prefetch is twice size (at least Prefetch), so
// the next batch is on its way while one is handled. Deliveries are settled
// only after h returns: when all succeed, with one multiple ack. A panic in
// h runs the batch again one delivery at a time, so only the delivery that
// panics is dead-lettered.
func (c *Client) ConsumeBatch(ctx context.Context, queue string, size int, h BatchHandler) error {
	size = min(max(size, 1), 32767)
	return c.consume(ctx, queue, func(ctx context.Context, s *session, _ *amqp.Channel, deliveries <-chan amqp.Delivery, d amqp.Delivery) {
		batch := []amqp.Delivery{d}
		// The client library hands deliveries over one at a time through a
		// goroutine of its own: wait a moment for the ones already
		// received, stopping as soon as none follows within batchGap, or
		// batchWait after the first.
		var gap *time.Timer
		until := time.Now().Add(batchWait)
	more:
		for len(batch) < size {
			select {
			case d, ok := <-deliveries:
				if !ok {
					break more
				}
				batch = append(batch, d)
				continue
			default:
			}
			if time.Now().After(until) {
				break
			}
			if gap == nil {
				gap = time.NewTimer(batchGap)
				defer gap.Stop()
			} else {
				gap.Reset(batchGap)
			}
			select {
			case d, ok := <-deliveries:
				if !ok {
					break more
				}
				batch = append(batch, d)
			case <-gap.C:
				break more
			case <-ctx.Done():
				break more
			}
		}
		c.log.Debug("amqp batch taken", "queue", queue, "deliveries", len(batch))
		c.handleBatch(ctx, s, queue, h, batch)
	}, max(c.cfg.Prefetch, 2*size))
}

// handleBatch runs h on batch and settles every delivery of it.
func (c *Client) handleBatch(ctx context.Context, s *session, queue string, h BatchHandler, batch []amqp.Delivery) {
	errs, panicked := c.runBatch(ctx, queue, h, batch)
	if panicked && len(batch) > 1 {
		for _, d := range batch {
			c.handleBatch(ctx, s, queue, h, []amqp.Delivery{d})
		}
		return
	}
	if panicked {
		c.deadLetter(ctx, s, queue, batch[0], errs[0])
		return
	}
	if len(errs) != len(batch) {
		err := fmt.Errorf("batch handler returned %d results for %d deliveries", len(errs), len(batch))
		errs = make([]error, len(batch))
		for i := range errs {
			errs[i] = err
		}
	}
	failed := false
	for _, err := range errs {
		failed = failed || err != nil
	}
	if !failed {
		_ = batch[len(batch)-1].Ack(true)
		c.m.consumed.WithLabelValues(resultAck).Add(float64(len(batch)))
		return
	}
	var retry []amqp.Delivery
	for i, d := range batch {
		switch err := errs[i]; {
		case err == nil:
			_ = d.Ack(false)
			c.m.consumed.WithLabelValues(resultAck).Inc()
		case IsPoison(err):
			c.deadLetter(ctx, s, queue, d, err)
		default:
			c.log.Warn("amqp handler failed, requeueing", "queue", queue, "message_id", d.MessageId, "err", err)
			retry = append(retry, d)
		}
	}
	if len(retry) > 0 {
		sleepCtx(ctx, c.retryPause)
		for _, d := range retry {
			_ = d.Nack(false, true)
		}
		c.m.consumed.WithLabelValues(resultRetry).Add(float64(len(retry)))
	}
}

// runBatch calls h, reporting a panic (as poison for a batch of one).
func (c *Client) runBatch(ctx context.Context, queue string, h BatchHandler, batch []amqp.Delivery) (errs []error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("amqp batch handler panicked", "queue", queue, "deliveries", len(batch), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			errs, panicked = []error{Poison(fmt.Errorf("handler panic: %v", r))}, true
		}
	}()
	ds := make([]Delivery, len(batch))
	for i, d := range batch {
		ds[i] = delivery(d)
	}
	return h(ctx, ds), false
}
