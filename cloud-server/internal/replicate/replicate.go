// Package replicate is the cloud's side of replication: it consumes every
// clinic's up queue (one active consumer per clinic across all nodes),
// accepts changes into PostgreSQL, and relays accepted changes down from the
// outbox with publisher confirms.
package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

// Broker is what replication needs of the AMQP client.
type Broker interface {
	Declare(ctx context.Context, t amqpx.Topology) error
	Publish(ctx context.Context, exchange, key string, m amqpx.Message) error
	Consume(ctx context.Context, queue string, h amqpx.Handler) error
}

// Replicator runs the consumers and the relay of one cloud node.
type Replicator struct {
	st     *store.Store
	broker Broker
	log    *slog.Logger
	wake   chan struct{}

	refresh time.Duration
	fresh   chan struct{} // a clinic was enrolled here: start its consumer now
	mu      sync.Mutex
	running map[ids.ID]bool

	accepted  prometheus.Counter
	redeliver prometheus.Counter
	relayed   prometheus.Counter
	conflicts prometheus.Counter
	parked    prometheus.Counter
	poisoned  *prometheus.CounterVec

	onAccepted func([]wire.Envelope)
}

// OnAccepted sets a function called with the clinic changes accepted into
// the cloud (after their commit), for viewers. Call before Run.
func (r *Replicator) OnAccepted(f func([]wire.Envelope)) { r.onAccepted = f }

// New returns a Replicator. reg may be nil.
func New(st *store.Store, broker Broker, log *slog.Logger, reg prometheus.Registerer) *Replicator {
	r := &Replicator{
		st: st, broker: broker, log: log, wake: make(chan struct{}, 1),
		refresh: 5 * time.Second, running: map[ids.ID]bool{}, fresh: make(chan struct{}, 1),
		accepted:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_accepted_total", Help: "Clinic changes accepted into the cloud sequence."}),
		redeliver: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_duplicate_total", Help: "Clinic changes received again after acceptance (idempotent no-ops)."}),
		relayed:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_relayed_total", Help: "Accepted changes published down with a broker confirm."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "conflicts_resolved_total", Help: "Concurrent clinic changes resolved by the clinic's conflict policy."}),
		parked:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_parked_total", Help: "Clinic changes parked until a record they refer to arrives."}),
		poisoned:  prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_rejected_total", Help: "Up messages dead-lettered, by reason."}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(r.accepted, r.redeliver, r.relayed, r.conflicts, r.parked, r.poisoned)
	}
	return r
}

// ClinicAdded starts the consumer of a clinic enrolled through this node
// now rather than at the next refresh (other nodes pick it up then).
func (r *Replicator) ClinicAdded() {
	select {
	case r.fresh <- struct{}{}:
	default:
	}
}

// Notify wakes the relay after a local commit wrote an outbox row.
func (r *Replicator) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run consumes and relays until ctx ends.
func (r *Replicator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.relay(ctx)
	}()
	t := time.NewTicker(r.refresh)
	defer t.Stop()
	for {
		r.startConsumers(ctx, &wg)
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
		case <-r.fresh:
		}
	}
}

// startConsumers starts a consumer for every clinic that has none yet; new
// clinics are picked up on the next refresh by every node.
func (r *Replicator) startConsumers(ctx context.Context, wg *sync.WaitGroup) {
	clinics, err := r.st.Clinics(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("list clinics failed", "err", err)
		}
		return
	}
	for _, c := range clinics {
		r.mu.Lock()
		started := r.running[c.ID]
		r.running[c.ID] = true
		r.mu.Unlock()
		if started {
			continue
		}
		wg.Add(1)
		go func(clinic ids.ID) {
			defer wg.Done()
			r.consume(ctx, clinic)
		}(c.ID)
	}
}

func (r *Replicator) consume(ctx context.Context, clinic ids.ID) {
	for ctx.Err() == nil {
		if err := r.broker.Declare(ctx, wire.ClinicTopology(clinic)); err != nil {
			if ctx.Err() == nil {
				r.log.Warn("declare clinic queues failed", "clinic", clinic, "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		err := r.broker.Consume(ctx, wire.UpQueue(clinic), func(ctx context.Context, d amqpx.Delivery) error {
			return r.handleUp(ctx, clinic, d)
		})
		if err != nil && ctx.Err() == nil {
			r.log.Warn("consumer stopped", "clinic", clinic, "err", err)
			sleep(ctx, time.Second)
		}
	}
}

// handleUp accepts one message (a batch of changes). A malformed or foreign
// message is poison as a whole; a change the store rejects is dead-lettered
// alone with its reason while the rest of the batch is applied; a database
// error is transient (the message is redelivered; the apply is idempotent).
func (r *Replicator) handleUp(ctx context.Context, clinic ids.ID, d amqpx.Delivery) error {
	b, err := wire.Decode(d.Body, d.ContentEncoding)
	if err != nil {
		r.poisoned.WithLabelValues("malformed").Inc()
		return amqpx.Poison(err)
	}
	if b.Clinic != clinic {
		r.poisoned.WithLabelValues("foreign_clinic").Inc()
		return amqpx.Poison(fmt.Errorf("message for clinic %s arrived on the queue of clinic %s", b.Clinic, clinic))
	}
	start := time.Now()
	res, err := r.st.ApplyUp(ctx, clinic, b.Changes)
	r.log.Debug("up batch applied", "clinic", clinic, "changes", len(b.Changes), "took", time.Since(start), "err", err)
	switch {
	case errors.Is(err, store.ErrUnknownClinic):
		r.poisoned.WithLabelValues("unknown_clinic").Inc()
		return amqpx.Poison(err)
	case err != nil:
		return err
	}
	for _, rj := range res.Rejected {
		if err := r.deadLetter(ctx, clinic, rj); err != nil {
			// Redelivery applies nothing twice and dead-letters again.
			return fmt.Errorf("dead-letter rejected change %s: %w", rj.Change.ChangeID, err)
		}
		r.poisoned.WithLabelValues("invalid_change").Inc()
		r.log.Warn("change rejected", "clinic", clinic, "change", rj.Change.ChangeID, "kind", rj.Change.Kind, "err", rj.Err)
	}
	if r.onAccepted != nil && len(res.Changes) > 0 {
		r.onAccepted(res.Changes)
	}
	r.accepted.Add(float64(res.Accepted))
	r.conflicts.Add(float64(res.Conflicts))
	r.redeliver.Add(float64(res.Duplicates))
	r.parked.Add(float64(res.Parked))
	if res.Accepted > 0 {
		r.Notify()
	}
	return nil
}

// deadLetter publishes one rejected change, alone, to the dead-letter
// exchange with the reason, as amqpx does for a poison message.
func (r *Replicator) deadLetter(ctx context.Context, clinic ids.ID, rj store.Rejected) error {
	body, err := json.Marshal(wire.NewBatch(clinic, rj.Change))
	if err != nil {
		return err
	}
	reason := rj.Err.Error()
	if len(reason) > 4096 {
		reason = reason[:4096]
	}
	return r.broker.Publish(ctx, wire.DeadExchange, wire.UpKey(clinic), amqpx.Message{
		Body: body, ContentType: wire.ContentType, Type: string(wire.TypeChange),
		MessageID: rj.Change.ChangeID.String(),
		Headers: map[string]any{
			amqpx.HeaderDeadReason: reason,
			amqpx.HeaderDeadQueue:  wire.UpQueue(clinic),
			amqpx.HeaderDeadAt:     time.Now().UTC().Format(time.RFC3339),
		},
	})
}

// relay publishes accepted changes down, oldest first, until ctx ends.
func (r *Replicator) relay(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for ctx.Err() == nil {
		n, err := r.st.RelayBatch(ctx, 200, r.publishDown)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("relay batch failed", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		r.relayed.Add(float64(n))
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
		case <-r.wake:
		case <-t.C:
		}
	}
}

func (r *Replicator) publishDown(ctx context.Context, b wire.Batch) error {
	msgs, err := wire.EncodeAll(b)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := r.broker.Publish(pctx, wire.DownExchange, wire.DownKey(b.Clinic), amqpx.Message{
			Body: m.Body, ContentType: wire.ContentType, ContentEncoding: m.ContentEncoding, Type: string(wire.TypeApplied),
		})
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
