// Package replicate is the cloud's side of replication: it consumes the up
// shard queues (one active consumer per shard across all nodes; every
// clinic's changes go through the one shard its id hashes to, so each
// clinic's order holds), accepts changes into PostgreSQL, relays accepted
// changes down from the outbox with publisher confirms, and sets up each
// clinic's broker topology once, migrating what earlier versions created.
package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

// Broker topology versions of a clinic (clinics.topology). A clinic is set
// up in two steps, so that a deployment upgraded with thousands of clinics
// on the per-clinic quorum queues of earlier versions replicates again
// within minutes, while the slow part (deleting thousands of quorum queues,
// which loads the broker) follows one queue at a time.
const (
	// TopologyNone: not set up yet (a new clinic), or enrolled on the
	// per-clinic quorum up and down queues of earlier versions.
	TopologyNone = 0
	// TopologyRouted: the clinic's up key is bound to its up shard (its
	// legacy up queue, if any, is unbound and drained) and its event queue
	// exists; a legacy quorum down queue may still serve it, and an empty
	// legacy up queue may still exist.
	TopologyRouted = 1
	// TopologyVersion: the clinic's topology is this version's: up key bound
	// to its shard, classic down queue, event queue; no legacy queue left.
	TopologyVersion = 2
)

// Broker is what replication needs of the AMQP client (*amqpx.Client).
type Broker interface {
	Declare(ctx context.Context, t amqpx.Topology) error
	DeclareOnce(ctx context.Context, t amqpx.Topology) error
	Publish(ctx context.Context, exchange, key string, m amqpx.Message) error
	Consume(ctx context.Context, queue string, h amqpx.Handler) error
	ConsumeBatch(ctx context.Context, queue string, size int, h amqpx.BatchHandler) error
	Inspect(ctx context.Context, queue string) (amqpx.QueueState, bool, error)
	Unbind(ctx context.Context, b amqpx.Binding) error
	DeleteQueue(ctx context.Context, queue string) (int, error)
	Drain(ctx context.Context, queue, deadLetterExchange string, h amqpx.Handler) (int, error)
}

// Replicator runs the consumers and the relay of one cloud node.
type Replicator struct {
	st     *store.Store
	broker Broker
	log    *slog.Logger
	wake   chan struct{}
	shards int
	// batch is how many up messages of a shard are accepted together.
	batch int
	// identities: clinics have their own broker identities (SetIdentities).
	identities bool

	refresh time.Duration
	fresh   chan struct{} // a clinic was enrolled here: set it up now
	setting atomic.Bool   // a setup round runs

	accepted   prometheus.Counter
	redeliver  prometheus.Counter
	relayed    prometheus.Counter
	conflicts  prometheus.Counter
	parked     prometheus.Counter
	unroutable prometheus.Counter
	poisoned   *prometheus.CounterVec
	together   prometheus.Histogram
	fallbacks  prometheus.Counter
	pending    prometheus.Gauge
	migrated   *prometheus.CounterVec
	// downProto counts down messages by the protocol version they were
	// converted to; incompatible counts those no version could carry.
	downProto    *prometheus.CounterVec
	incompatible prometheus.Counter

	onAccepted func([]wire.Envelope)
	onDisabled func(ids.ID)

	mu sync.Mutex
	// users is each clinic's broker login ("" for a clinic not
	// provisioned yet), refreshed with the clinic list and read from the
	// store for a clinic not in it yet.
	users    map[ids.ID]string
	disabled map[ids.ID]bool
	// protocols is the range each clinic stated (absent: not known here
	// yet — the store's, read on first use).
	protocols map[ids.ID]statedRange
	// protoGen counts SetProtocols calls; protoSet is the count at each
	// clinic's last one. A refresh that read the clinic list before that
	// keeps the newer range (its own read may predate it).
	protoGen uint64
	protoSet map[ids.ID]uint64

	// listed, when set (tests), runs after a refresh has read the clinic
	// list and before it updates this node's view of it.
	listed func()
}

// statedRange is a clinic's range and whether it stated one (false: a
// release before ranges; the range is then wire.Legacy).
type statedRange struct {
	wire.Range
	stated bool
}

// OnDisabled sets a function called once for each clinic this node finds
// disabled (to close its WebSockets here). Call before Run.
func (r *Replicator) OnDisabled(f func(ids.ID)) { r.onDisabled = f }

// OnAccepted sets a function called with the clinic changes accepted into
// the cloud (after their commit), for viewers. Call before Run.
func (r *Replicator) OnAccepted(f func([]wire.Envelope)) { r.onAccepted = f }

// SetIdentities tells that this cloud gives clinics their own broker
// identities (amqp.management_url is set). Call before Run.
func (r *Replicator) SetIdentities(on bool) { r.identities = on }

// DefaultAcceptBatch is how many up messages of a shard a node accepts in
// one PostgreSQL transaction by default (amqp.accept_batch).
const DefaultAcceptBatch = 256

// SetAcceptBatch sets how many up messages of a shard are accepted together
// (amqp.accept_batch; 1 accepts each message alone). Call before Run.
func (r *Replicator) SetAcceptBatch(n int) { r.batch = max(n, 1) }

// SetShards sets the number of up shards (amqp.up_shards; default
// wire.DefaultUpShards). Call before Run.
func (r *Replicator) SetShards(n int) { r.shards = max(n, 1) }

// New returns a Replicator. reg may be nil.
func New(st *store.Store, broker Broker, log *slog.Logger, reg prometheus.Registerer) *Replicator {
	r := &Replicator{
		st: st, broker: broker, log: log, wake: make(chan struct{}, 1), shards: wire.DefaultUpShards, batch: DefaultAcceptBatch,
		refresh: 5 * time.Second, users: map[ids.ID]string{}, disabled: map[ids.ID]bool{}, protocols: map[ids.ID]statedRange{}, protoSet: map[ids.ID]uint64{}, fresh: make(chan struct{}, 1),
		accepted:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_accepted_total", Help: "Clinic changes accepted into the cloud sequence."}),
		redeliver:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_duplicate_total", Help: "Clinic changes received again after acceptance (idempotent no-ops)."}),
		relayed:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_relayed_total", Help: "Accepted changes published down with a broker confirm."}),
		conflicts:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "conflicts_resolved_total", Help: "Concurrent clinic changes resolved by the clinic's conflict policy."}),
		parked:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_parked_total", Help: "Clinic changes parked until a record they refer to arrives."}),
		unroutable: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "down_unroutable_total", Help: "Down messages the broker could route to no queue (a clinic without a down queue); the clinic pulls those changes."}),
		poisoned:   prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "changes_rejected_total", Help: "Up messages dead-lettered, by reason."}, []string{"reason"}),
		together: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "scsync", Subsystem: "cloud", Name: "accept_batch_messages",
			Help: "Up messages accepted together in one PostgreSQL transaction.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "accept_batch_fallbacks_total",
			Help: "Batches of up messages whose transaction failed and that were accepted again one message at a time."}),
		pending:  prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "scsync", Subsystem: "cloud", Name: "clinics_topology_pending", Help: "Clinics whose broker topology is not set up (or migrated) yet, as this node last counted."}),
		migrated: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "legacy_queues_migrated_total", Help: "Per-clinic quorum queues of earlier versions drained and deleted (up) or replaced (down) by this node."}, []string{"queue"}),
		downProto: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "down_messages_total",
			Help: "Down messages published, by the wire protocol version they were converted to (the newest the clinic speaks)."}, []string{"protocol"}),
		incompatible: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "down_incompatible_total",
			Help: "Down messages not sent because the clinic speaks no protocol version this node speaks (upgrade the clinic)."}),
	}
	if reg != nil {
		reg.MustRegister(r.accepted, r.redeliver, r.relayed, r.conflicts, r.parked, r.unroutable, r.poisoned, r.together, r.fallbacks, r.pending, r.migrated, r.downProto, r.incompatible)
	}
	return r
}

// ClinicAdded sets up the broker topology of a clinic enrolled through this
// node now rather than at the next refresh.
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

// Run consumes every up shard, relays, and keeps the clinic list fresh until
// ctx ends.
func (r *Replicator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.relay(ctx)
	}()
	// The shard queues are remembered by the client (declared again after
	// every reconnect; their dead-letter exchange is where Consume puts
	// poison).
	for ctx.Err() == nil {
		err := r.broker.Declare(ctx, wire.UpShardsTopology(r.shards))
		if err == nil {
			break
		}
		if ctx.Err() == nil {
			r.log.Error("declare up shard queues failed (amqp.up_shards must be the same on every node)", "shards", r.shards, "err", err)
			sleep(ctx, 5*time.Second)
		}
	}
	for k := range r.shards {
		wg.Add(1)
		go func(queue string) {
			defer wg.Done()
			r.consume(ctx, queue)
		}(wire.UpShardQueue(k))
	}
	t := time.NewTicker(r.refresh)
	defer t.Stop()
	for {
		r.refreshClinics(ctx, &wg)
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
		case <-r.fresh:
		}
	}
}

func (r *Replicator) consume(ctx context.Context, queue string) {
	h := r.batchHandler(queue)
	for ctx.Err() == nil {
		if err := r.broker.ConsumeBatch(ctx, queue, r.batch, h); err != nil && ctx.Err() == nil {
			r.log.Warn("consumer stopped", "queue", queue, "err", err)
			sleep(ctx, time.Second)
		}
	}
}

// refreshClinics reloads every clinic's broker user and disabled state
// (calling onDisabled for a clinic newly found disabled) and starts setting
// up the clinics whose topology is not the current one.
func (r *Replicator) refreshClinics(ctx context.Context, wg *sync.WaitGroup) {
	r.mu.Lock()
	gen := r.protoGen
	r.mu.Unlock()
	clinics, err := r.st.ClinicStates(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("list clinics failed", "err", err)
		}
		return
	}
	if r.listed != nil {
		r.listed()
	}
	var route, finish []ids.ID
	var newlyDisabled []ids.ID
	r.mu.Lock()
	for _, c := range clinics {
		r.users[c.ID] = c.BrokerUser
		if r.protoSet[c.ID] <= gen { // not set since the list was read
			r.protocols[c.ID] = statedRange{c.Protocols(), c.ProtocolMin != nil}
		}
		if off := c.DisabledAt != nil; off != r.disabled[c.ID] {
			r.disabled[c.ID] = off
			if off {
				newlyDisabled = append(newlyDisabled, c.ID)
			}
		}
		if c.Topology < TopologyRouted {
			route = append(route, c.ID)
		}
		if c.Topology < TopologyVersion {
			finish = append(finish, c.ID)
		}
	}
	r.mu.Unlock()
	if r.onDisabled != nil {
		for _, c := range newlyDisabled {
			r.onDisabled(c)
		}
	}
	r.pending.Set(float64(len(finish)))
	if len(finish) == 0 || !r.setting.CompareAndSwap(false, true) {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer r.setting.Store(false)
		// Every clinic's changes flow first; then the legacy queues go.
		r.setUp(ctx, route, TopologyRouted)
		r.setUp(ctx, finish, TopologyVersion)
	}()
}

// setUp brings each clinic to version want, one at a time, each under the
// clinic's lock (a clinic another node is setting up is skipped: the next
// refresh sees what that node did).
func (r *Replicator) setUp(ctx context.Context, clinics []ids.ID, want int) {
	for _, c := range clinics {
		if ctx.Err() != nil {
			return
		}
		ran, err := r.st.WithClinicLock(ctx, c, func(ctx context.Context) error {
			have, err := r.st.ClinicTopology(ctx, c)
			if err != nil || have >= want {
				return err
			}
			if have < TopologyRouted {
				if err := r.Route(ctx, c); err != nil {
					return err
				}
				if err := r.st.SetTopology(ctx, c, TopologyRouted); err != nil {
					return err
				}
			}
			if want < TopologyVersion {
				return nil
			}
			if err := r.Finish(ctx, c); err != nil {
				return err
			}
			return r.st.SetTopology(ctx, c, TopologyVersion)
		})
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Warn("clinic topology setup failed; will retry", "clinic", c, "step", want, "err", err)
		case ran:
			r.log.Debug("clinic topology set up", "clinic", c, "version", want)
		}
	}
}

// Route makes the clinic's changes flow through its up shard (idempotent):
// if a per-clinic quorum up queue of an earlier version exists, it unbinds
// it from the up exchange first (the
// clinic's next publishes are unroutable and wait in its outbox, so its
// order holds) and drains what it holds with the same checks and apply as
// the shards (changes not accepted yet: none is lost); then it binds the
// clinic's key to its shard. A legacy quorum down queue keeps serving the
// clinic until Finish.
func (r *Replicator) Route(ctx context.Context, clinic ids.ID) error {
	legacy := wire.UpQueue(clinic)
	st, exists, err := r.broker.Inspect(ctx, legacy)
	if err != nil {
		return fmt.Errorf("inspect legacy up queue: %w", err)
	}
	if exists {
		if err := r.broker.Unbind(ctx, wire.LegacyUpBinding(clinic)); err != nil {
			return err
		}
		if st.Messages > 0 || st.Consumers > 0 {
			n, err := r.broker.Drain(ctx, legacy, wire.DeadExchange, r.handler(legacy))
			if err != nil {
				return fmt.Errorf("drain legacy up queue (%d taken): %w", n, err)
			}
			r.log.Info("legacy up queue drained", "clinic", clinic, "messages", n)
		}
	}
	up := amqpx.Topology{Bindings: []amqpx.Binding{wire.UpBinding(clinic, r.shards)}}
	if err := r.broker.DeclareOnce(ctx, up); err != nil {
		return fmt.Errorf("bind clinic to its shard: %w", err)
	}
	return nil
}

// Finish completes the clinic's topology (idempotent): a classic down queue
// (a legacy quorum one refuses the declare with PRECONDITION_FAILED on
// x-queue-type: it is deleted and declared again, and the clinic pulls the
// changes it held — the cloud's change log is the source of truth), its
// bindings — the cloud's events for the clinic among them, when its
// sc-local reads them there (events) — the event queue of its own that
// builds before had deleted, and the legacy up queue deleted once it is
// empty and unused.
func (r *Replicator) Finish(ctx context.Context, clinic ids.ID) error {
	down := amqpx.Topology{Queues: []amqpx.Queue{wire.DownQueueSpec(clinic)},
		Bindings: []amqpx.Binding{{Queue: wire.DownQueue(clinic), Exchange: wire.DownExchange, Key: wire.DownKey(clinic)}}}
	err := r.broker.DeclareOnce(ctx, down)
	if amqpx.IsPreconditionFailed(err) {
		n, derr := r.broker.DeleteQueue(ctx, wire.DownQueue(clinic))
		if derr != nil {
			return derr
		}
		r.migrated.WithLabelValues("down").Inc()
		r.log.Info("legacy down queue replaced by a classic one; the clinic pulls what it held", "clinic", clinic, "messages", n)
		err = r.broker.DeclareOnce(ctx, down)
	}
	if err != nil {
		return fmt.Errorf("declare down queue: %w", err)
	}
	if err := r.broker.DeclareOnce(ctx, wire.ClinicTopology(clinic, r.shards)); err != nil {
		return fmt.Errorf("declare clinic topology: %w", err)
	}
	if r.eventsFor(clinic) {
		if err := r.broker.DeclareOnce(ctx, events.ClinicTopology(clinic)); err != nil {
			return fmt.Errorf("bind the clinic's events: %w", err)
		}
	}
	if _, err := r.broker.DeleteQueue(ctx, events.LegacyClinicQueue(clinic)); err != nil {
		return err
	}
	legacy := wire.UpQueue(clinic)
	st, ok, err := r.broker.Inspect(ctx, legacy)
	if err != nil || !ok {
		return err
	}
	if st.Messages > 0 || st.Consumers > 0 {
		// A node of an earlier version still consumes it, or routed to it
		// again: route the clinic again (drain it) and then try again.
		if err := r.st.SetTopology(ctx, clinic, TopologyNone); err != nil {
			return err
		}
		return fmt.Errorf("legacy up queue %s still has %d messages and %d consumers (stop sc-cloud nodes of earlier versions)", legacy, st.Messages, st.Consumers)
	}
	if _, err := r.broker.DeleteQueue(ctx, legacy); err != nil {
		return err
	}
	r.migrated.WithLabelValues("up").Inc()
	r.log.Info("legacy up queue deleted", "clinic", clinic)
	return nil
}

// eventsFor reports whether the clinic's down queue gets the cloud's events
// for it: when the cloud gives clinics their own broker identities, only a
// clinic that has one — its sc-local is then a build that reads events in
// its down queue (an older one, on a shared login, has an event queue of
// its own and would take them for poison); without identities (a
// development cloud), every clinic. Provisioning an identity binds them
// (brokeradmin.Provision).
func (r *Replicator) eventsFor(clinic ids.ID) bool {
	if !r.identities {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.users[clinic] != ""
}

// handler handles a message of an up shard (or of a legacy per-clinic up
// queue): the clinic is the one its routing key names.
func (r *Replicator) handler(queue string) amqpx.Handler {
	return func(ctx context.Context, d amqpx.Delivery) error {
		clinic, ok := wire.ClinicOfKey(d.RoutingKey)
		if !ok {
			r.poisoned.WithLabelValues("foreign_key").Inc()
			return amqpx.Poison(fmt.Errorf("routing key %q on %s names no clinic", d.RoutingKey, queue))
		}
		return r.handleUp(ctx, queue, clinic, d)
	}
}

// SetProtocols tells this node the range a clinic stated (on a pull or at
// enrollment through this node), before the next refresh of the clinic list.
// (stated false: none, a release before ranges).
func (r *Replicator) SetProtocols(clinic ids.ID, p wire.Range, stated bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.protocols[clinic] = statedRange{p, stated}
	r.protoGen++
	r.protoSet[clinic] = r.protoGen
}

// protocolsOf returns the range the clinic speaks, from the store when
// this node has not listed the clinic yet.
func (r *Replicator) protocolsOf(ctx context.Context, clinic ids.ID) (statedRange, error) {
	r.mu.Lock()
	p, ok := r.protocols[clinic]
	r.mu.Unlock()
	if ok {
		return p, nil
	}
	c, err := r.st.ClinicByID(ctx, clinic)
	if err != nil {
		return statedRange{}, err
	}
	p = statedRange{c.Protocols(), c.ProtocolMin != nil}
	r.SetProtocols(clinic, p.Range, p.stated)
	return p, nil
}

// noteProtocols records the range an up message states (none: the clinic
// runs a release before ranges, or was rolled back to one) when it is not
// the one known.
func (r *Replicator) noteProtocols(ctx context.Context, clinic ids.ID, d amqpx.Delivery) error {
	p, stated, err := wire.RangeOfHeaders(d.Headers)
	if err != nil {
		// A garbled statement: keep what is known; the body decoded.
		r.log.Warn("up message states a malformed protocol range", "clinic", clinic, "err", err)
		return nil
	}
	known, err := r.protocolsOf(ctx, clinic)
	if err != nil || known == (statedRange{p, stated}) {
		return err
	}
	if _, err := r.st.SetProtocols(ctx, clinic, p, stated); err != nil {
		return err
	}
	r.SetProtocols(clinic, p, stated)
	r.log.Info("clinic protocol range changed", "clinic", clinic, "from", known.String(), "to", p.String(), "stated", stated)
	return nil
}

// user returns the clinic's broker login, from the store when this node
// has not listed the clinic yet (enrolled since the last refresh).
func (r *Replicator) user(ctx context.Context, clinic ids.ID) (string, error) {
	r.mu.Lock()
	u, ok := r.users[clinic]
	r.mu.Unlock()
	if ok {
		return u, nil
	}
	c, err := r.st.ClinicByID(ctx, clinic)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.users[clinic] = c.BrokerUser
	r.mu.Unlock()
	return c.BrokerUser, nil
}

// publisher checks that the message was published by the clinic its
// routing key names: its user-id (which the broker verified against the
// connection's login) is the clinic's broker user. A clinic not provisioned
// yet (enrolled before per-clinic identities) has no user to compare with;
// its messages pass on the key alone until an operator provisions it
// (docs/protocol.md, migration).
func (r *Replicator) publisher(ctx context.Context, clinic ids.ID, d amqpx.Delivery) error {
	u, err := r.user(ctx, clinic)
	if err != nil {
		return err
	}
	if u != "" && d.UserID != u {
		return amqpx.Poison(fmt.Errorf("user-id %q is not clinic %s's broker user", d.UserID, clinic))
	}
	return nil
}

// handleUp accepts one message (a batch of changes) of clinic, consumed
// from queue. A malformed or foreign message is poison as a whole; a change
// the store rejects is dead-lettered alone with its reason while the rest of
// the batch is applied; a database error is transient (the message is
// redelivered; the apply is idempotent).
func (r *Replicator) handleUp(ctx context.Context, queue string, clinic ids.ID, d amqpx.Delivery) error {
	b, err := r.checkUp(ctx, queue, clinic, d)
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := r.st.ApplyUp(ctx, clinic, b.Changes)
	r.log.Debug("up batch applied", "clinic", clinic, "changes", len(b.Changes), "took", time.Since(start), "err", err)
	switch {
	case errors.Is(err, store.ErrUnknownClinic):
		r.poisoned.WithLabelValues("unknown_clinic").Inc()
		return amqpx.Poison(err)
	case store.IsRefusedContent(err):
		r.poisoned.WithLabelValues("refused_content").Inc()
		return amqpx.Poison(err)
	case err != nil:
		return err
	}
	if err := r.rejected(ctx, queue, clinic, res); err != nil {
		return err
	}
	r.applied(res)
	return nil
}

// checkUp decodes an up message of clinic and checks that it is the
// clinic's: a Poison error (counted) when it never can be accepted, another
// error when the check could not be made (try again).
func (r *Replicator) checkUp(ctx context.Context, queue string, clinic ids.ID, d amqpx.Delivery) (wire.Batch, error) {
	b, err := wire.Decode(d.Body, d.ContentEncoding)
	if err != nil {
		r.poisoned.WithLabelValues("malformed").Inc()
		return b, amqpx.Poison(err)
	}
	if b.Clinic != clinic {
		r.poisoned.WithLabelValues("foreign_clinic").Inc()
		return b, amqpx.Poison(fmt.Errorf("message for clinic %s arrived with the routing key of clinic %s", b.Clinic, clinic))
	}
	switch err := r.publisher(ctx, clinic, d); {
	case errors.Is(err, store.ErrUnknownClinic):
		r.poisoned.WithLabelValues("unknown_clinic").Inc()
		return b, amqpx.Poison(err)
	case amqpx.IsPoison(err):
		r.poisoned.WithLabelValues("foreign_publisher").Inc()
		return b, err
	case err != nil:
		return b, err
	}
	if err := r.noteProtocols(ctx, clinic, d); err != nil {
		if errors.Is(err, store.ErrUnknownClinic) {
			r.poisoned.WithLabelValues("unknown_clinic").Inc()
			return b, amqpx.Poison(err)
		}
		return b, err
	}
	return b, nil
}

// rejected dead-letters the changes of res the store refused, each alone
// with its reason. An error means one could not be: the message is
// redelivered, which applies nothing twice and dead-letters again.
func (r *Replicator) rejected(ctx context.Context, queue string, clinic ids.ID, res store.UpResult) error {
	for _, rj := range res.Rejected {
		if err := r.deadLetter(ctx, queue, clinic, rj); err != nil {
			return fmt.Errorf("dead-letter rejected change %s: %w", rj.Change.ChangeID, err)
		}
		r.poisoned.WithLabelValues("invalid_change").Inc()
		r.log.Warn("change rejected", "clinic", clinic, "change", rj.Change.ChangeID, "kind", rj.Change.Kind, "err", rj.Err)
	}
	return nil
}

// applied tells viewers and the relay about what a commit accepted, and
// counts it.
func (r *Replicator) applied(res store.UpResult) {
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
}

// maxTxChanges bounds the changes one accept transaction takes from a
// batch of messages (a single larger message still goes alone), so that a
// clinic's row lock is not held for long by a backfill's burst.
const maxTxChanges = 5000

// batchHandler accepts the messages of an up shard taken together: each is
// checked alone (one that is poison is dead-lettered alone), and the rest
// are applied in as few PostgreSQL transactions as maxTxChanges allows —
// each clinic's changes in the order of its messages, under its row lock,
// cloud_seq handed out in that order. The deliveries are acked (by the
// caller) only after the commit that holds their changes. When a
// transaction fails, its messages are applied again one at a time, so one
// message that cannot be applied does not hold up the others; a clinic
// whose message failed transiently has its later messages of the batch
// tried again too, after it, so its order holds.
func (r *Replicator) batchHandler(queue string) amqpx.BatchHandler {
	single := r.handler(queue)
	return func(ctx context.Context, ds []amqpx.Delivery) []error {
		out := make([]error, len(ds))
		if len(ds) == 1 {
			out[0] = single(ctx, ds[0])
			return out
		}
		type msg struct {
			i      int
			clinic ids.ID
			b      wire.Batch
		}
		held := map[ids.ID]error{} // clinics whose order a transient failure holds
		var ok []msg
		for i, d := range ds {
			clinic, isClinic := wire.ClinicOfKey(d.RoutingKey)
			if !isClinic {
				r.poisoned.WithLabelValues("foreign_key").Inc()
				out[i] = amqpx.Poison(fmt.Errorf("routing key %q on %s names no clinic", d.RoutingKey, queue))
				continue
			}
			if err := held[clinic]; err != nil {
				out[i] = err
				continue
			}
			b, err := r.checkUp(ctx, queue, clinic, d)
			if err != nil {
				if !amqpx.IsPoison(err) {
					held[clinic] = err
				}
				out[i] = err
				continue
			}
			ok = append(ok, msg{i, clinic, b})
		}
		for len(ok) > 0 {
			n, changes := 0, 0
			for n < len(ok) && (n == 0 || changes+len(ok[n].b.Changes) <= maxTxChanges) {
				changes += len(ok[n].b.Changes)
				n++
			}
			var chunk []msg
			for _, m := range ok[:n] {
				if err := held[m.clinic]; err != nil {
					out[m.i] = err
					continue
				}
				chunk = append(chunk, m)
			}
			ok = ok[n:]
			var groups []store.ClinicChanges
			at := map[ids.ID]int{}
			for _, m := range chunk {
				g, seen := at[m.clinic]
				if !seen {
					g = len(groups)
					at[m.clinic] = g
					groups = append(groups, store.ClinicChanges{Clinic: m.clinic})
				}
				groups[g].Changes = append(groups[g].Changes, m.b.Changes...)
			}
			if len(groups) == 0 {
				continue
			}
			start := time.Now()
			res, err := r.st.ApplyUpMany(ctx, groups)
			r.log.Debug("up messages applied together", "queue", queue, "messages", len(chunk), "clinics", len(groups), "changes", changes, "took", time.Since(start), "err", err)
			if err != nil {
				if ctx.Err() == nil {
					r.fallbacks.Inc()
					r.log.Warn("accepting messages together failed; accepting them one at a time", "queue", queue, "messages", len(chunk), "err", err)
				}
				for _, m := range chunk {
					if err := held[m.clinic]; err != nil {
						out[m.i] = err
						continue
					}
					out[m.i] = r.handleUp(ctx, queue, m.clinic, ds[m.i])
					if out[m.i] != nil && !amqpx.IsPoison(out[m.i]) {
						held[m.clinic] = out[m.i]
					}
				}
				continue
			}
			r.together.Observe(float64(len(chunk)))
			for g, gr := range groups {
				if err := r.rejected(ctx, queue, gr.Clinic, res[g]); err != nil {
					// Its messages come again: nothing is applied twice,
					// the rejected changes are dead-lettered again.
					held[gr.Clinic] = err
				}
				r.applied(res[g])
			}
			for _, m := range chunk {
				out[m.i] = held[m.clinic]
			}
		}
		return out
	}
}

// deadLetter publishes one rejected change, alone, to the dead-letter
// exchange with the reason, as amqpx does for a poison message.
func (r *Replicator) deadLetter(ctx context.Context, queue string, clinic ids.ID, rj store.Rejected) error {
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
			amqpx.HeaderDeadQueue:  queue,
			amqpx.HeaderDeadAt:     time.Now().UTC().Format(time.RFC3339),
		},
	})
}

// relayLimit is how many outbox rows one relay round takes: two full down
// messages of a clinic's backfill, or that many clinics' single changes
// (published concurrently by RelayBatch).
const relayLimit = 2 * wire.MaxBatch

// relay publishes accepted changes down, oldest first, until ctx ends.
func (r *Replicator) relay(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for ctx.Err() == nil {
		n, err := r.st.RelayBatch(ctx, relayLimit, r.publishDown)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("relay batch failed", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		r.relayed.Add(float64(n))
		if n >= relayLimit {
			continue // more may wait
		}
		// A commit that wrote an outbox row during the round woke the relay
		// again (Notify), and another node's commit is taken at the tick:
		// no round just to find the outbox empty.
		select {
		case <-ctx.Done():
		case <-r.wake:
		case <-t.C:
		}
	}
}

// publishDown sends a batch of accepted changes to the clinic, converted to
// the newest protocol version it speaks (a clinic of a release before
// ranges gets exactly version 2, which it decodes strictly).
func (r *Replicator) publishDown(ctx context.Context, b wire.Batch) error {
	theirs, err := r.protocolsOf(ctx, b.Clinic)
	if err != nil {
		return err
	}
	v, err := wire.Negotiate(wire.Local(), theirs.Range)
	if err != nil {
		// Nothing this node can send reaches the clinic: its change log
		// keeps the changes until it is upgraded (and pulls them).
		r.incompatible.Add(float64(len(b.Changes)))
		r.log.Error("down message not sent: the clinic speaks no protocol version this node speaks; upgrade it", "clinic", b.Clinic, "err", err)
		return nil
	}
	if b, err = b.As(v); err != nil {
		return err
	}
	msgs, err := wire.EncodeAll(b)
	if err != nil {
		return err
	}
	proto := strconv.Itoa(v)
	for _, m := range msgs {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := r.broker.Publish(pctx, wire.DownExchange, wire.DownKey(b.Clinic), amqpx.Message{
			Body: m.Body, ContentType: wire.ContentType, ContentEncoding: m.ContentEncoding, Type: string(wire.TypeApplied),
			Headers: wire.Local().Headers(),
			// Transient: a clinic's down queue holding it keeps no file
			// open on the broker (10,000 queues holding messages exhausted
			// its descriptors as persistent ones); a broker restart loses
			// it, and the clinic pulls it from the change log (it pulls
			// whenever its consumer subscribes, on a gap, and every
			// pull_every).
			Transient: true,
		})
		cancel()
		if errors.Is(err, amqpx.ErrUnroutable) {
			// The clinic has no down queue (not set up yet, or removed):
			// nothing can hold the message, and the clinic pulls these
			// changes from the change log. Do not hold up other clinics.
			r.unroutable.Inc()
			r.log.Warn("down message unroutable: the clinic has no down queue; it will pull the changes", "clinic", b.Clinic)
			return nil
		}
		if err != nil {
			return err
		}
		r.downProto.WithLabelValues(proto).Inc()
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
