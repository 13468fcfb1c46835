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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

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
	// seqHeader numbers a message's events: "<publisher>:<first>", the
	// publisher (shard) that sent it, first the number of its first event
	// among the events of its clinic that this Bus accepted for that
	// publisher; the message's other events follow it with no hole (send
	// cuts a batch where a number is missing). A receiver that sees a
	// number jump knows events were lost (see streams).
	seqHeader = "x-scsync-events-seq"
	// gapLogEvery rate-limits the warning about lost events.
	gapLogEvery = 10 * time.Second
	// streamForget is how long a receiver remembers a stream it hears
	// nothing from; pruneEvery how often it looks for such streams.
	streamForget = 24 * time.Hour
	pruneEvery   = 10 * time.Minute
	// streamsPerClinic caps the streams a receiver remembers for one
	// clinic (normally 4 per live publisher: the clinic and each cloud
	// node); a clinic's broker login could otherwise invent origins.
	streamsPerClinic = 64
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
	// numbers holds, per publisher, the number of the last event accepted
	// for each clinic (seqHeader).
	numbers [publishers]numbering
	running atomic.Bool
	// lastDropLog is when the last dropped-event warning was logged (unix ns).
	lastDropLog atomic.Int64

	streams streams // what this Bus received, to find lost events
	// gaps counts the gaps found; lastGapLog is when one was last logged
	// (unix ns).
	gaps       atomic.Int64
	lastGapLog atomic.Int64
}

// numbering numbers the events of one publisher per clinic. Its mutex is
// held from the number to the outbox, so the outbox holds them in order.
type numbering struct {
	mu   sync.Mutex
	last map[ids.ID]uint64
}

type outgoing struct {
	clinic ids.ID
	num    uint64 // its number among its clinic's events of its publisher
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
		bus.numbers[i].last = map[ids.ID]uint64{}
	}
	bus.streams.clinics = map[ids.ID]*clinicStreams{}
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
// is an error. Seq is ignored; a zero At is set to now. Every accepted event
// is numbered (seqHeader), dropped ones too, so receivers learn of the loss.
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
	e.origin = b.origin
	b.deliver(e)
	key := RoutingKey(e.Clinic, e.Kind, e.Record)
	i := shard(key)
	nb := &b.numbers[i]
	nb.mu.Lock()
	nb.last[e.Clinic]++
	select {
	case b.outbox[i] <- outgoing{clinic: e.Clinic, num: nb.last[e.Clinic], key: key, body: body, at: e.At}:
		nb.mu.Unlock()
	default:
		nb.mu.Unlock()
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
	for i := range b.outbox {
		wg.Go(func() { b.publishLoop(ctx, i) })
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

// publishLoop sends publisher i's outbox.
func (b *Bus) publishLoop(ctx context.Context, i int) {
	out := b.outbox[i]
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
			// events in order keeps every record's (and their numbers).
			slices.SortStableFunc(batch, func(x, y outgoing) int { return cmp.Compare(x.clinic, y.clinic) })
			for len(batch) > 0 {
				n := 1
				for n < len(batch) && batch[n].clinic == batch[0].clinic && batch[n].num == batch[n-1].num+1 {
					n++
				}
				b.send(ctx, i, batch[:n])
				batch = batch[n:]
			}
		}
	}
}

// send publishes events of one clinic numbered one after the other by
// publisher i, in order: one alone under its own routing key, several as a
// JSON array under the clinic's batch key. A message that does not reach
// the broker is only logged: its receivers find the gap at the next one.
func (b *Bus) send(ctx context.Context, i int, ms []outgoing) {
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
		Headers:     map[string]any{originHeader: b.origin, seqHeader: strconv.Itoa(i) + ":" + strconv.FormatUint(ms[0].num, 10)},
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
	origin, _ := d.Headers[originHeader].(string)
	if origin == b.origin {
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
	// Numbered (a server of this version or later): were events of this
	// clinic lost before these? Then the Hub resets the clinic's viewers
	// before it sends them these.
	if ok && origin != "" && b.streams.gap(origin, clinic, d.Headers[seqHeader], len(es), time.Now()) {
		b.lost(clinic, origin)
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
		e.origin = origin
		b.deliver(e)
	}
	return nil
}

// Gaps is how many times this Bus found that events sent to it were lost.
func (b *Bus) Gaps() int64 { return b.gaps.Load() }

// lost delivers a reset for clinic, whose events from origin were lost on
// the way: a Hub (Hub.Publish) then resets the clinic's viewers and forgets
// what origin told it of who edits. It logs at most once per gapLogEvery.
func (b *Bus) lost(clinic ids.ID, origin string) {
	n := b.gaps.Add(1)
	b.deliver(Event{Type: TypeReset, Clinic: clinic, At: time.Now().UTC(), origin: origin})
	now := time.Now().UnixNano()
	last := b.lastGapLog.Load()
	if now-last < int64(gapLogEvery) || !b.lastGapLog.CompareAndSwap(last, now) {
		return
	}
	b.log.Warn("events lost on the way, viewers told to re-fetch", "clinic", clinic, "gaps_total", n)
}

// streams is what a receiving Bus remembers of the numbered event streams
// it receives (seqHeader): per clinic, per origin and publisher, the last
// number seen. Memory: 80 bytes a stream (one per clinic, publishing
// server and publisher, 4 publishers a server); a cloud node hearing
// 10,000 clinics, each from the clinic and 3 other nodes, holds 160,000
// streams, 13 MB. A message's check takes about 160 ns. Streams silent for
// streamForget are forgotten (a server's origin changes at each restart),
// every pruneEvery, in one pass over them all under the lock: 7 ms at
// 160,000 (BenchmarkStreams, 2 cores, load 1.7).
type streams struct {
	mu        sync.Mutex
	clinics   map[ids.ID]*clinicStreams
	lastPrune time.Time
}

type clinicStreams struct {
	last map[streamID]streamState
	// forgot: a stream of this clinic was forgotten, so one seen "for the
	// first time" may be one of those; a number past 1 is then a gap.
	forgot bool
}

type streamID struct {
	origin    unique.Handle[string] // one copy of each origin, not one a stream
	publisher uint8
}

type streamState struct {
	last uint64
	seen int64 // unix ns
}

// gap records that a message of n events of clinic, numbered by hdr
// (seqHeader), came from origin, and reports whether events of that
// stream were lost before it. Duplicates and redeliveries (numbers already
// seen) are no gap, nor is a stream seen for the first time (this receiver
// or the publisher just started), unless the clinic's streams were
// forgotten (see clinicStreams.forgot). A message without a valid number
// is not tracked (an older server during an upgrade).
func (s *streams) gap(origin string, clinic ids.ID, hdr any, n int, now time.Time) bool {
	pub, first, ok := parseSeq(hdr)
	if !ok || n <= 0 {
		return false
	}
	last := first + uint64(n) - 1
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastPrune) >= pruneEvery {
		s.pruneLocked(t - int64(streamForget))
		s.lastPrune = now
	}
	c := s.clinics[clinic]
	if c == nil {
		c = &clinicStreams{}
		s.clinics[clinic] = c
	}
	if c.last == nil {
		c.last = map[streamID]streamState{}
	}
	id := streamID{origin: unique.Make(origin), publisher: pub}
	st, seen := c.last[id]
	if !seen {
		if len(c.last) >= streamsPerClinic {
			c.evictOldest()
		}
		c.last[id] = streamState{last: last, seen: t}
		return c.forgot && first > 1
	}
	gap := first > st.last+1
	c.last[id] = streamState{last: max(st.last, last), seen: t}
	return gap
}

// pruneLocked forgets the streams last seen before cutoff (unix ns).
func (s *streams) pruneLocked(cutoff int64) {
	for _, c := range s.clinics {
		for id, st := range c.last {
			if st.seen < cutoff {
				delete(c.last, id)
				c.forgot = true
			}
		}
		if len(c.last) == 0 {
			c.last = nil // a map does not shrink; an empty one goes
		}
	}
}

// evictOldest forgets the clinic's stream seen least recently.
func (c *clinicStreams) evictOldest() {
	var oldest streamID
	first := true
	var at int64
	for id, st := range c.last {
		if first || st.seen < at {
			oldest, at, first = id, st.seen, false
		}
	}
	delete(c.last, oldest)
	c.forgot = true
}

// parseSeq reads a seqHeader value: its publisher and first number.
func parseSeq(hdr any) (publisher uint8, first uint64, ok bool) {
	v, _ := hdr.(string)
	p, f, found := strings.Cut(v, ":")
	if !found {
		return 0, 0, false
	}
	pn, err := strconv.ParseUint(p, 10, 8)
	if err != nil {
		return 0, 0, false
	}
	first, err = strconv.ParseUint(f, 10, 64)
	if err != nil || first == 0 || first > 1<<62 {
		return 0, 0, false
	}
	return uint8(pn), first, true
}
