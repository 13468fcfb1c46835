package events

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
)

// MessageType is the AMQP type property of event messages: a clinic's down
// consumer tells the events in its queue by it.
const MessageType = "scsync.event"

// Bus defaults applied by NewBus for zero BusConfig fields.
const (
	DefaultOutbox         = 1024
	DefaultPublishTimeout = 5 * time.Second
)

const (
	// publishers send the outbox concurrently; events of one record always
	// go through the same one, so they keep their order.
	publishers = 4
	// originHeader carries the publishing Bus's id, so a Bus can skip its
	// own events (it delivered them locally already).
	originHeader = "x-scsync-events-origin"
	// contentType of event messages.
	contentType = "application/json"
	// declareRetryMax caps the pause between attempts to declare the queue.
	declareRetryMax = 30 * time.Second
	// dropLogEvery rate-limits the warning about dropped events.
	dropLogEvery = 10 * time.Second
)

// Broker is what a Bus needs of the server's RabbitMQ client; *amqpx.Client
// implements it.
type Broker interface {
	Declare(ctx context.Context, t amqpx.Topology) error
	Publish(ctx context.Context, exchange, key string, m amqpx.Message) error
	Consume(ctx context.Context, queue string, h amqpx.Handler) error
}

// BusConfig configures a Bus.
type BusConfig struct {
	// Name names this server's queue, scsync.events.<Name>. It must be
	// unique among running servers (two processes on one queue would split
	// its events) and should stay the same across restarts of a server —
	// "local.<clinic>", "cloud.<node id>" — so a restart takes its queue
	// over instead of leaving one behind. Letters, digits, '.', '_', '-'.
	Name string
	// Clinic, when set, binds the queue to that clinic's events only
	// (sc-local); zero binds it to every clinic's (sc-cloud).
	Clinic ids.ID
	// UserID, when set, is sent as the AMQP user-id property, which the
	// broker checks against the connection's user.
	UserID string
	// Provisioned (sc-local, with Clinic set) means the cloud set up this
	// clinic's topology at enrollment and the clinic's broker identity may
	// not declare anything: Run declares nothing, publishes to UpExchange
	// and consumes nothing — the clinic's events arrive in its down queue,
	// whose consumer hands them to Handle. Name is then unused.
	Provisioned bool
	// Outbox is how many events may wait for the broker; more are dropped.
	Outbox int
	// PublishTimeout bounds sending one event, connection wait included.
	PublishTimeout time.Duration
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$`)

// Bus publishes events to RabbitMQ and delivers the events of this server's
// queue. Create it with NewBus, run it with Run.
type Bus struct {
	broker  Broker
	cfg     BusConfig
	queue   string
	publish string // the exchange events are published to
	deliver func(Event)
	log     *slog.Logger
	origin  string
	outbox  []chan outgoing
	running atomic.Bool
	// lastDropLog is when the last dropped-event warning was logged (unix ns).
	lastDropLog atomic.Int64
}

type outgoing struct {
	clinic ids.ID
	key    string
	body   []byte
	at     time.Time
}

// perMessage bounds the events one message carries: a burst waiting in a
// publisher's outbox (a backfill accepting hundreds of records a second)
// goes as a few messages, not one per event with its own confirm.
const perMessage = 200

// NewBus returns a Bus that publishes through broker and hands every event
// it receives — and every event published through it — to deliver
// (typically Hub.Publish). deliver must not block. log may be nil.
func NewBus(broker Broker, cfg BusConfig, deliver func(Event), log *slog.Logger) (*Bus, error) {
	switch {
	case broker == nil:
		return nil, fmt.Errorf("broker is nil: %w", ErrInvalidConfig)
	case deliver == nil:
		return nil, fmt.Errorf("deliver is nil: %w", ErrInvalidConfig)
	case !nameRE.MatchString(cfg.Name):
		return nil, fmt.Errorf("name %q: want letters, digits, '.', '_' or '-': %w", cfg.Name, ErrInvalidConfig)
	case cfg.Clinic < 0:
		return nil, fmt.Errorf("clinic %d: %w", cfg.Clinic, ErrInvalidConfig)
	case cfg.Provisioned && cfg.Clinic == 0:
		return nil, fmt.Errorf("a provisioned bus needs its clinic: %w", ErrInvalidConfig)
	case cfg.Outbox < 0:
		return nil, fmt.Errorf("outbox %d, want >= 0: %w", cfg.Outbox, ErrInvalidConfig)
	case cfg.PublishTimeout < 0:
		return nil, fmt.Errorf("publish timeout %s, want >= 0: %w", cfg.PublishTimeout, ErrInvalidConfig)
	}
	if cfg.Outbox == 0 {
		cfg.Outbox = DefaultOutbox
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	bus := &Bus{
		broker:  broker,
		cfg:     cfg,
		queue:   QueuePrefix + cfg.Name,
		publish: Exchange,
		deliver: deliver,
		log:     log,
		origin:  hex.EncodeToString(b[:]),
		outbox:  make([]chan outgoing, publishers),
	}
	if cfg.Provisioned {
		bus.queue, bus.publish = "", UpExchange
	}
	for i := range bus.outbox {
		bus.outbox[i] = make(chan outgoing, max(1, cfg.Outbox/publishers))
	}
	return bus, nil
}

// Queue is the name of this server's event queue ("" for a provisioned
// bus, which consumes none).
func (b *Bus) Queue() string { return b.queue }

// Topology is what Run declares: the exchanges, this server's queue and its
// bindings (a cloud node's queue takes every clinic's events from both
// exchanges). A provisioned bus declares nothing.
func (b *Bus) Topology() amqpx.Topology {
	if b.cfg.Provisioned {
		return amqpx.Topology{}
	}
	key := AllClinics
	bindings := []amqpx.Binding{{Queue: b.queue, Exchange: Exchange, Key: key}}
	if b.cfg.Clinic != 0 {
		bindings[0].Key = ClinicPattern(b.cfg.Clinic)
	} else {
		bindings = append(bindings, amqpx.Binding{Queue: b.queue, Exchange: UpExchange, Key: key})
	}
	return amqpx.Topology{
		Exchanges: []amqpx.Exchange{{Name: Exchange, Kind: "topic"}, {Name: UpExchange, Kind: "topic"}},
		// A node that never comes back leaves its queue for 10 minutes at
		// most, and a slow one keeps only the newest events.
		Queues: []amqpx.Queue{{Name: b.queue, Args: map[string]any{
			"x-expires": int32(10 * 60 * 1000), "x-max-length": int32(10000), "x-overflow": "drop-head",
		}}},
		Bindings: bindings,
	}
}

// Publish validates e, hands it to this server's deliver function at once,
// and queues it for the broker. It does not wait for the broker: events are
// notifications, and a broker outage must not slow the request that caused
// one; while the outbox is full (broker unreachable) events are dropped and
// a warning is logged. Only an invalid event (ErrInvalidEvent) or a done ctx
// is an error. Seq is ignored; a zero At is set to now.
func (b *Bus) Publish(ctx context.Context, e Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.Validate(); err != nil {
		return err
	}
	e.Seq = 0
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	body, err := e.AppendJSON(make([]byte, 0, 256))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	b.deliver(e)
	key := RoutingKey(e.Clinic, e.Kind, e.Record)
	select {
	case b.outbox[shard(key)] <- outgoing{clinic: e.Clinic, key: key, body: body, at: e.At}:
	default:
		b.dropped(key)
	}
	return nil
}

func shard(key string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % publishers)
}

// dropped logs a dropped event, at most once per dropLogEvery.
func (b *Bus) dropped(key string) {
	now := time.Now().UnixNano()
	last := b.lastDropLog.Load()
	if now-last < int64(dropLogEvery) || !b.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	b.log.Warn("event outbox full, events dropped", "routing_key", key, "outbox", b.cfg.Outbox)
}

// Run declares the topology (retrying until the broker accepts it), then
// publishes the outbox and consumes this server's queue until ctx is done,
// and returns nil (a provisioned bus only publishes). It returns an error
// only when the broker's Consume does (amqpx: its Client stopped). Run may
// be called once.
func (b *Bus) Run(ctx context.Context) error {
	if !b.running.CompareAndSwap(false, true) {
		return errors.New("events: Bus.Run called more than once")
	}
	if !b.cfg.Provisioned && !b.declare(ctx) {
		return nil
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, out := range b.outbox {
		wg.Go(func() { b.publishLoop(ctx, out) })
	}
	if b.cfg.Provisioned {
		<-ctx.Done()
		wg.Wait()
		return nil
	}
	err := b.broker.Consume(ctx, b.queue, b.handle)
	cancel()
	wg.Wait()
	if parent.Err() != nil {
		// Shutting down: the broker client may close before Consume sees
		// the context end, and that is not a failure.
		return nil
	}
	if err != nil {
		return fmt.Errorf("consume %s: %w", b.queue, err)
	}
	return nil
}

// declare declares the topology, retrying with backoff; false when ctx ended.
func (b *Bus) declare(ctx context.Context) bool {
	delay := 100 * time.Millisecond
	for {
		err := b.broker.Declare(ctx, b.Topology())
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		b.log.Warn("event queue not declared, retrying", "queue", b.queue, "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		delay = min(2*delay, declareRetryMax)
	}
}

func (b *Bus) publishLoop(ctx context.Context, out <-chan outgoing) {
	batch := make([]outgoing, 0, perMessage)
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-out:
			// Whatever else waits goes along: one message per clinic.
			batch = append(batch[:0], m)
		more:
			for len(batch) < perMessage {
				select {
				case m := <-out:
					batch = append(batch, m)
				default:
					break more
				}
			}
			// A record belongs to one clinic, so keeping each clinic's
			// events in order keeps every record's.
			slices.SortStableFunc(batch, func(x, y outgoing) int { return cmp.Compare(x.clinic, y.clinic) })
			for len(batch) > 0 {
				n := 1
				for n < len(batch) && batch[n].clinic == batch[0].clinic {
					n++
				}
				b.send(ctx, batch[:n])
				batch = batch[n:]
			}
		}
	}
}

// send publishes events of one clinic, in order: one alone under its own
// routing key, several as a JSON array under the clinic's batch key.
func (b *Bus) send(ctx context.Context, ms []outgoing) {
	key, body := ms[0].key, ms[0].body
	if len(ms) > 1 {
		key = BatchKey(ms[0].clinic)
		var buf bytes.Buffer
		buf.WriteByte('[')
		for i, m := range ms {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(m.body)
		}
		buf.WriteByte(']')
		body = buf.Bytes()
	}
	pctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	err := b.broker.Publish(pctx, b.publish, key, amqpx.Message{
		Body:        body,
		ContentType: contentType,
		Type:        MessageType,
		UserID:      b.cfg.UserID,
		Expiration:  EventTTL,
		Transient:   true, // live only: nothing to keep across a broker restart
		Headers:     map[string]any{originHeader: b.origin},
		Timestamp:   ms[0].at,
	})
	cancel()
	// Unroutable means no server listens for that clinic right now.
	if err != nil && !errors.Is(err, amqpx.ErrUnroutable) && ctx.Err() == nil {
		b.log.Warn("event not published", "routing_key", key, "events", len(ms), "err", err)
	}
}

// Handle delivers the events of a message consumed elsewhere: a clinic's
// events share its down queue, whose consumer passes each message of type
// MessageType here. It never fails (see handle).
func (b *Bus) Handle(ctx context.Context, d amqpx.Delivery) error { return b.handle(ctx, d) }

// handle delivers one event from the queue. It never fails: a message that
// is not an event is dropped with a warning (redelivering cannot fix it).
func (b *Bus) handle(_ context.Context, d amqpx.Delivery) error {
	if o, _ := d.Headers[originHeader].(string); o == b.origin {
		return nil // delivered locally by Publish
	}
	var es []Event
	body := bytes.TrimSpace(d.Body)
	if len(body) > 0 && body[0] == '[' {
		// Several events of one clinic (send).
		if err := json.Unmarshal(body, &es); err != nil {
			b.log.Warn("events dropped, not a JSON array of events", "routing_key", d.RoutingKey, "err", err)
			return nil
		}
	} else {
		var e Event
		if err := json.Unmarshal(body, &e); err != nil {
			b.log.Warn("event dropped, not JSON", "routing_key", d.RoutingKey, "err", err)
			return nil
		}
		es = []Event{e}
	}
	// The broker's topic permissions vouch for the routing key, not for the
	// body: an event must be about the clinic its key names.
	clinic, ok := clinicOfKey(d.RoutingKey)
	if b.cfg.Clinic != 0 && ok && clinic != b.cfg.Clinic {
		return nil
	}
	for _, e := range es {
		if !ok || clinic != e.Clinic {
			b.log.Warn("event dropped, clinic does not match its routing key", "routing_key", d.RoutingKey, "clinic", e.Clinic)
			continue
		}
		if e.Type == TypeReset || e.Type == "" {
			// Resets come from a Hub only. Other unknown types pass: a newer
			// server may send types this one does not know; viewers skip them.
			b.log.Warn("event dropped, bad type", "routing_key", d.RoutingKey, "type", e.Type)
			continue
		}
		e.Seq = 0
		b.deliver(e)
	}
	return nil
}
