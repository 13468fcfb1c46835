// Package syncer moves the clinic's changes up and the cloud's changes down.
//
// Up: a relay publishes outbox rows in order with publisher confirms and
// deletes each row only after the broker's ack. Down: the clinic's down
// queue is applied strictly in cloud_seq order; a gap (or a queue lost while
// offline, or messages dropped by the queue's length limit) is filled from
// the cloud's pull API, which also runs at start, whenever the down consumer
// subscribes (after a broker restart, which loses the cloud's transient down
// messages) and every pull_every — so even the last message lost is fetched
// within that period — and re-syncs
// a new or wiped database (M29). The cloud's events for the clinic share
// its down queue: they go to OnEvents.
package syncer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

// Broker is what the syncer needs of the AMQP client. The clinic declares
// nothing: the cloud created its queues at enrollment, and its broker
// identity may only publish up and read its own queues.
type Broker interface {
	Publish(ctx context.Context, exchange, key string, m amqpx.Message) error
	Consume(ctx context.Context, queue string, h amqpx.Handler) error
}

// Puller reads the cloud's change feed.
type Puller interface {
	Changes(ctx context.Context, since int64, limit int) (wire.ChangesPage, error)
}

// protocolPeer is a Puller that knows the protocol range the cloud stated
// (*cloudapi.Client).
type protocolPeer interface {
	CloudProtocols() (wire.Range, bool)
}

// Syncer runs the relay, the down consumer and the catch-up puller.
type Syncer struct {
	st     *store.Store
	broker Broker
	pull   Puller
	log    *slog.Logger
	wake   chan struct{}
	kick   chan struct{} // the backfill may have new work
	soon   chan struct{} // pull now (PullSoon)
	whole  atomic.Bool   // the next pull takes the whole feed (PullSoon)
	every  time.Duration

	applyMu sync.Mutex // down changes are applied one at a time, in order

	published prometheus.Counter
	applied   prometheus.Counter
	pulled    prometheus.Counter
	skipped   prometheus.Counter
	batch     int
	onApplied func([]wire.Envelope)
	onEvents  amqpx.Handler
	bf        *backfiller
	userID    string
	// sent counts backfill changes the broker confirmed that the cloud has
	// not acknowledged yet: the backfill keeps at most aheadMax of them and
	// of its outbox rows together, so a live change published after them
	// waits behind at most that many in the broker (acked tells when the
	// last acknowledgment came, to forget acknowledgments that never come).
	sent  atomic.Int64
	acked atomic.Int64
	// rate measures the acknowledgments of backfill changes, which size
	// the backfill's window (window).
	rate ackRate
	// downAt is when a down message was last applied (unix ns): while they
	// flow, the periodic pull has nothing to add.
	downAt atomic.Int64
}

// SetUserID sets the AMQP user-id property of every up message: the
// clinic's broker login, which the broker checks and the cloud compares with
// the clinic the message names. Call before Run.
func (s *Syncer) SetUserID(u string) { s.userID = u }

// New returns a Syncer; pullEvery is the catch-up period. reg may be nil.
func New(st *store.Store, broker Broker, pull Puller, pullEvery time.Duration, log *slog.Logger, reg prometheus.Registerer) *Syncer {
	s := &Syncer{
		st: st, broker: broker, pull: pull, log: log, wake: make(chan struct{}, 1), kick: make(chan struct{}, 1), soon: make(chan struct{}, 1), every: pullEvery,
		published: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "changes_published_total", Help: "Local changes confirmed by the broker."}),
		applied:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "changes_applied_total", Help: "Cloud changes applied here (including acceptances)."}),
		pulled:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "changes_pulled_total", Help: "Cloud changes fetched through the pull API."}),
		skipped:   prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "changes_skipped_total", Help: "Cloud changes whose content this build cannot apply."}),
		batch:     wire.MaxBatch,
		bf:        newBackfiller(reg),
	}
	if reg != nil {
		reg.MustRegister(s.published, s.applied, s.pulled, s.skipped)
	}
	return s
}

// Notify wakes the relay after a commit wrote an outbox row, and the
// backfill (a scope change or an import may have given it work).
func (s *Syncer) Notify() {
	for _, ch := range []chan struct{}{s.wake, s.kick} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Run runs until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){s.relay, s.consume, s.catchUpLoop, s.backfill} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	wg.Wait()
	return nil
}

func (s *Syncer) relay(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for ctx.Err() == nil {
		n, err := s.relayOnce(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("publish failed; will retry", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if n >= s.batch {
			continue // a full message went: the outbox holds more
		}
		if n > 0 {
			// The outbox was emptied while saves go on: the changes saved
			// in the next moment go together, as after a wake-up. Without
			// this a busy clinic's relay went round again at once, for the
			// few changes committed during its publish: a message every
			// few milliseconds, each a transaction in the cloud, an
			// acceptance message back and two writes here.
			sleep(ctx, relayLinger)
			continue
		}
		select {
		case <-ctx.Done():
		case <-s.wake:
			// Let the changes committed in the next moment join this one's
			// message: the cloud applies a message per transaction, so at a
			// few hundred saves a second single-change messages would queue
			// up there.
			sleep(ctx, relayLinger)
		case <-t.C:
		}
	}
}

// relayLinger is how long the relay waits, after a wake-up or a round that
// emptied the outbox, for more changes to send in the same message.
const relayLinger = 20 * time.Millisecond

// relayMessages is how many full messages one relay round takes from the
// outbox: their rows are deleted in one commit once the broker confirmed
// them all (a commit per message took a good part of the clinic's writer
// during a backfill).
const relayMessages = 4

// relayOnce publishes the oldest outbox rows, in order, batched into as few
// messages as the size limit allows (M28); a row is deleted only after the
// broker confirmed its message, and the first failure ends the round so the
// order holds.
func (s *Syncer) relayOnce(ctx context.Context) (int, error) {
	rows, err := s.st.NextOutbox(ctx, relayMessages*s.batch)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	done := 0
	for done < len(rows) {
		n, err := s.relayRows(ctx, rows[done:min(done+s.batch, len(rows))])
		done += n
		if err != nil {
			// What was confirmed goes; the rest is sent again, in order.
			if derr := s.delete(ctx, rows[:done]); derr != nil {
				return 0, derr
			}
			return done, err
		}
	}
	return done, s.delete(ctx, rows)
}

// delete removes the outbox rows the broker confirmed.
func (s *Syncer) delete(ctx context.Context, rows []store.Outbox) error {
	if len(rows) == 0 {
		return nil
	}
	confirmed := make([]int64, len(rows))
	for i, o := range rows {
		confirmed[i] = o.ID
	}
	if err := s.st.DeleteOutbox(ctx, confirmed...); err != nil {
		return err
	}
	for _, o := range rows {
		if o.Lane == store.LaneBackfill {
			s.sent.Add(1)
		}
	}
	s.published.Add(float64(len(rows)))
	return nil
}

// relayRows publishes rows (at most a message's worth) and returns how many
// of them the broker confirmed, in order.
func (s *Syncer) relayRows(ctx context.Context, rows []store.Outbox) (int, error) {
	clinic := s.st.Clinic()
	v, err := s.upProtocol()
	if err != nil {
		return 0, err
	}
	msgs, err := encodeOutbox(clinic, v, rows)
	if err != nil {
		return 0, err
	}
	done := 0
	for _, m := range msgs {
		// The headers state the range this build speaks (a cloud before
		// ranges ignores them; the body stays in a version it decodes).
		err := s.broker.Publish(ctx, wire.UpExchange, wire.UpKey(clinic), amqpx.Message{
			Body: m.Body, ContentType: wire.ContentType, ContentEncoding: m.ContentEncoding,
			Type: string(wire.TypeChange), Timestamp: time.Now(), UserID: s.userID,
			Headers: wire.Local().Headers(),
		})
		if err != nil {
			return done, err
		}
		done += m.Changes
	}
	return done, nil
}

// encodeOutbox encodes outbox rows as messages of protocol version v. Rows
// stored in that version (all of them, but after an upgrade or while the
// cloud is older) go as they are stored, without decoding and encoding
// each envelope again: at a backfill's rate that was a tenth of sc-local's
// CPU.
func encodeOutbox(clinic ids.ID, v int, rows []store.Outbox) ([]wire.Encoded, error) {
	prefix := `{"protocol":` + strconv.Itoa(v) + `,`
	raw := make([]json.RawMessage, 0, len(rows))
	for _, o := range rows {
		if !strings.HasPrefix(o.Envelope, prefix) {
			raw = nil
			break
		}
		raw = append(raw, json.RawMessage(o.Envelope))
	}
	if raw != nil {
		return wire.EncodeRawAll(v, clinic, raw)
	}
	b := wire.NewBatch(clinic)
	for _, o := range rows {
		var e wire.Envelope
		if err := json.Unmarshal([]byte(o.Envelope), &e); err != nil {
			return nil, fmt.Errorf("outbox row %d: %w", o.ID, err)
		}
		b.Changes = append(b.Changes, e)
	}
	b, err := b.As(v)
	if err != nil {
		return nil, err
	}
	return wire.EncodeAll(b)
}

// upProtocol is the version the relay sends in: the newest both this build
// and the cloud speak. Until a pull answer told the cloud's range, the
// cloud is taken for a release before ranges (exactly wire.LegacyProtocol),
// which every cloud the compatibility policy covers decodes.
func (s *Syncer) upProtocol() (int, error) {
	theirs := wire.Legacy()
	if p, ok := s.pull.(protocolPeer); ok {
		if r, known := p.CloudProtocols(); known {
			theirs = r
		}
	}
	v, err := wire.Negotiate(wire.Local(), theirs)
	if err != nil {
		return 0, fmt.Errorf("the cloud speaks no protocol version this sc-local speaks; upgrade the older side: %w", err)
	}
	return v, nil
}

// batchConsumer is a Broker that hands over many deliveries at once
// (*amqpx.Client).
type batchConsumer interface {
	ConsumeBatch(ctx context.Context, queue string, size int, h amqpx.BatchHandler) error
}

// downMessages is how many down messages are applied in one transaction
// (one commit on the clinic's writer for up to that many times
// wire.MaxBatch acceptances during a backfill).
const downMessages = 8

func (s *Syncer) consume(ctx context.Context) {
	clinic := s.st.Clinic()
	for ctx.Err() == nil {
		var err error
		if bc, ok := s.broker.(batchConsumer); ok {
			err = bc.ConsumeBatch(ctx, wire.DownQueue(clinic), downMessages, s.handleDownBatch)
		} else {
			err = s.broker.Consume(ctx, wire.DownQueue(clinic), s.handleDown)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("down consumer stopped", "err", err)
			sleep(ctx, time.Second)
		}
	}
}

// OnEvents sets the function that takes the cloud's event messages, which
// share the clinic's down queue (events.Bus.Handle). Call before Run.
func (s *Syncer) OnEvents(f amqpx.Handler) { s.onEvents = f }

func (s *Syncer) handleDown(ctx context.Context, d amqpx.Delivery) error {
	return s.handleDownBatch(ctx, []amqpx.Delivery{d})[0]
}

// handleDownBatch handles down messages taken together, in queue order:
// the changes of consecutive change messages are applied in one
// transaction (a message that is malformed or not this clinic's is poison
// alone), an event message goes to OnEvents after the changes before it
// were applied. If a transaction fails, the messages whose changes it held
// are requeued; applying them again is idempotent (the checkpoint).
func (s *Syncer) handleDownBatch(ctx context.Context, ds []amqpx.Delivery) []error {
	out := make([]error, len(ds))
	var changes []wire.Envelope
	var carried []int // the deliveries whose changes are in changes
	apply := func() {
		if len(changes) == 0 {
			return
		}
		if err := s.applyDown(ctx, changes); err != nil {
			for _, i := range carried {
				out[i] = err
			}
		}
		changes, carried = nil, nil
	}
	for i, d := range ds {
		if d.Type == events.MessageType || d.Exchange == events.Exchange {
			apply()
			if s.onEvents != nil { // else nobody shows events here: drop it
				out[i] = s.onEvents(ctx, d)
			}
			continue
		}
		b, err := s.decodeDown(d)
		if err != nil {
			out[i] = err
			continue
		}
		changes = append(changes, b.Changes...)
		carried = append(carried, i)
	}
	apply()
	return out
}

// decodeDown decodes a down message of changes; an error is Poison.
func (s *Syncer) decodeDown(d amqpx.Delivery) (wire.Batch, error) {
	b, err := wire.Decode(d.Body, d.ContentEncoding)
	if err != nil {
		return b, amqpx.Poison(err)
	}
	if b.Clinic != s.st.Clinic() {
		return b, amqpx.Poison(fmt.Errorf("message for clinic %s on clinic %s's down queue", b.Clinic, s.st.Clinic()))
	}
	for _, e := range b.Changes {
		if e.Type != wire.TypeApplied {
			return b, amqpx.Poison(fmt.Errorf("%s message on a down queue", e.Type))
		}
	}
	return b, nil
}

// applyDown applies changes pushed down the queue (in queue order).
func (s *Syncer) applyDown(ctx context.Context, changes []wire.Envelope) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	res, err := s.st.ApplyDown(ctx, changes)
	if err != nil {
		return err
	}
	s.acknowledged(changes)
	s.downAt.Store(time.Now().UnixNano())
	s.count(res)
	if res.Gap != 0 {
		// Earlier changes are missing (lost while offline, or relayed out of
		// order by two cloud nodes): fetch them, and the rest of the batch.
		var last int64
		for _, e := range changes {
			last = max(last, e.CloudSeq)
		}
		if err := s.catchUpLocked(ctx, last); err != nil {
			return fmt.Errorf("fill gap before cloud_seq %d: %w", res.Gap, err)
		}
	}
	return nil
}

// acknowledged takes the cloud's acceptances of this clinic's changes off
// the count of sent backfill changes (live ones are few; the count never
// goes below zero).
func (s *Syncer) acknowledged(changes []wire.Envelope) {
	n := int64(0)
	for _, e := range changes {
		if e.Origin == wire.OriginLocal {
			n++
		}
	}
	if n == 0 {
		return
	}
	now := time.Now()
	s.acked.Store(now.UnixNano())
	for {
		cur := s.sent.Load()
		if s.sent.CompareAndSwap(cur, max(cur-n, 0)) {
			s.rate.add(now, min(cur, n))
			return
		}
	}
}

// unacknowledged is how many sent backfill changes still wait for the
// cloud. When none has been acknowledged for ackPatience (the cloud is
// away, or its acceptances went by the pull API during a restart) the
// count is forgotten: the broker holds the changes and the backfill goes
// on as before.
func (s *Syncer) unacknowledged() int64 {
	n := s.sent.Load()
	if n > 0 && time.Since(time.Unix(0, s.acked.Load())) > ackPatience {
		s.sent.Store(0)
		s.acked.Store(time.Now().UnixNano())
		return 0
	}
	return n
}

// ackPatience is how long the backfill waits for the cloud's
// acknowledgments before it stops counting them.
const ackPatience = 30 * time.Second

// OnApplied sets a function called with the changes applied from the cloud
// (after their commit). Call before Run.
func (s *Syncer) OnApplied(f func([]wire.Envelope)) { s.onApplied = f }

func (s *Syncer) count(res store.DownResult) {
	if s.onApplied != nil && len(res.Changes) > 0 {
		s.onApplied(res.Changes)
	}
	s.applied.Add(float64(res.Applied))
	if res.Skipped > 0 {
		s.skipped.Add(float64(res.Skipped))
		s.log.Warn("cloud changes skipped: content this build cannot apply", "count", res.Skipped)
	}
}

func (s *Syncer) catchUpLoop(ctx context.Context) {
	for ctx.Err() == nil {
		// While the down queue brings changes (within the period) a gap in
		// them is filled as it shows, and a full pull would fetch what the
		// queue brings anyway: one page then, which still tells the cloud
		// the checkpoint (ack=true) and fetches a lost last message unless
		// more than a page follows it. Once they stop, the whole feed.
		pages := 0
		if time.Since(time.Unix(0, s.downAt.Load())) < s.every && !s.whole.Swap(false) {
			pages = 1
		}
		s.applyMu.Lock()
		err := s.pullLocked(ctx, 0, pages)
		s.applyMu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("catch-up from cloud failed; will retry", "err", err)
		}
		t := time.NewTimer(s.every)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-s.soon:
		}
		t.Stop()
	}
}

// PullSoon makes the catch-up puller run now instead of at its next period.
// sc-local calls it whenever its down consumer subscribes: the cloud's down
// messages are transient, so a broker restart may have lost some that the
// checkpoint has not reached, and the pull fetches them at once.
func (s *Syncer) PullSoon() {
	s.whole.Store(true) // the whole feed: the queue may have lost more than a page
	select {
	case s.soon <- struct{}{}:
	default:
	}
}

// CatchUp pulls and applies every change after the checkpoint.
func (s *Syncer) CatchUp(ctx context.Context) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	return s.catchUpLocked(ctx, 0)
}

// catchUpLocked pulls pages until cloud_seq until has been applied or, when
// until is 0, up to the head the first page states (the whole feed, from a
// cloud that states none). It does not chase a head that keeps moving: the
// feed grows as fast as a backfill is accepted, and while the pull holds
// applyMu the down queue, which brings the same changes pushed, waits.
func (s *Syncer) catchUpLocked(ctx context.Context, until int64) error {
	return s.pullLocked(ctx, until, 0)
}

// pullLocked is catchUpLocked that stops after pages pages (0: no limit).
func (s *Syncer) pullLocked(ctx context.Context, until int64, pages int) error {
	asked := until // a gap to fill: the feed must reach it
	for n := 1; ; n++ {
		first := n == 1
		cp, err := s.st.Checkpoint(ctx)
		if err != nil {
			return err
		}
		if until > 0 && cp >= until {
			return nil
		}
		page, err := s.pull.Changes(ctx, cp, 500)
		if err != nil {
			return err
		}
		if err := s.st.TouchContact(ctx); err != nil {
			return err
		}
		if first && until == 0 && page.Head > 0 {
			until = page.Head
		}
		if len(page.Changes) > 0 {
			res, err := s.st.ApplyDown(ctx, page.Changes)
			if err != nil {
				return err
			}
			if res.Gap != 0 {
				return fmt.Errorf("pull API skipped from %d to %d", cp, res.Gap)
			}
			s.acknowledged(page.Changes)
			s.count(res)
			s.pulled.Add(float64(res.Applied))
		}
		if !page.More {
			if asked > 0 && page.Next < asked {
				return fmt.Errorf("cloud feed ends at %d, before %d", page.Next, asked)
			}
			return nil
		}
		if n == pages {
			return nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
