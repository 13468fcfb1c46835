package events

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

// TestStreamsGap: what a receiver takes for lost events, and what not.
func TestStreamsGap(t *testing.T) {
	t.Parallel()
	type msg struct {
		origin string
		clinic ids.ID
		hdr    any
		n      int
		gap    bool
	}
	tests := []struct {
		name string
		msgs []msg
	}{
		{"first seen, then in order", []msg{
			{"o1", clinicA, "0:7", 1, false}, {"o1", clinicA, "0:8", 3, false}, {"o1", clinicA, "0:11", 1, false},
		}},
		{"a number missing", []msg{
			{"o1", clinicA, "0:1", 1, false}, {"o1", clinicA, "0:3", 1, true}, {"o1", clinicA, "0:4", 1, false},
		}},
		{"a batch's numbers count", []msg{
			{"o1", clinicA, "2:1", 5, false}, {"o1", clinicA, "2:6", 1, false}, {"o1", clinicA, "2:8", 2, true},
		}},
		{"redelivery and duplicates", []msg{
			{"o1", clinicA, "1:5", 2, false}, {"o1", clinicA, "1:5", 2, false}, {"o1", clinicA, "1:1", 1, false},
			{"o1", clinicA, "1:6", 3, false}, {"o1", clinicA, "1:9", 1, false},
		}},
		{"streams apart: clinic, publisher, origin", []msg{
			{"o1", clinicA, "0:1", 1, false}, {"o1", clinicB, "0:5", 1, false}, {"o1", clinicA, "1:9", 1, false},
			{"o2", clinicA, "0:4", 1, false}, {"o1", clinicA, "0:2", 1, false}, {"o2", clinicA, "0:6", 1, true},
		}},
		{"no header or a bad one (older server): not tracked", []msg{
			{"o1", clinicA, nil, 1, false}, {"o1", clinicA, "0:1", 1, false}, {"o1", clinicA, nil, 1, false},
			{"o1", clinicA, "x", 1, false}, {"o1", clinicA, "0:0", 1, false}, {"o1", clinicA, "300:9", 1, false},
			{"o1", clinicA, int64(9), 1, false}, {"o1", clinicA, "0:2", 1, false}, {"o1", clinicA, "0:4", 1, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := streams{clinics: map[ids.ID]*clinicStreams{}}
			now := time.Now()
			for i, m := range tt.msgs {
				if got := s.gap(m.origin, m.clinic, m.hdr, m.n, now); got != m.gap {
					t.Errorf("message %d: gap(%s, %d, %v, %d) = %v, want %v", i, m.origin, m.clinic, m.hdr, m.n, got, m.gap)
				}
			}
		})
	}

	t.Run("forgotten streams", func(t *testing.T) {
		t.Parallel()
		s := streams{clinics: map[ids.ID]*clinicStreams{}}
		now := time.Now()
		s.gap("o1", clinicA, "0:1", 1, now)
		s.gap("o1", clinicB, "0:1", 1, now)
		later := now.Add(streamForget / 2)
		s.gap("o1", clinicB, "0:2", 1, later) // B's stays alive
		much := now.Add(streamForget + pruneEvery)
		if got := s.gap("o9", clinicA, "0:1", 1, much); got {
			t.Errorf("a new stream numbered from 1 after A's was forgotten: gap = true, want false")
		}
		if n := len(s.clinics[clinicA].last); n != 1 {
			t.Fatalf("clinic A holds %d streams after a day, want 1 (the old one forgotten)", n)
		}
		if got := s.gap("o1", clinicA, "0:7", 1, much); !got {
			t.Errorf("the forgotten stream back at 7: gap = false, want true (it may have lost 2..6)")
		}
		if got := s.gap("o1", clinicB, "0:3", 1, much); got {
			t.Errorf("clinic B's stream, alive: gap = true, want false")
		}
	})

	t.Run("streams per clinic capped", func(t *testing.T) {
		t.Parallel()
		s := streams{clinics: map[ids.ID]*clinicStreams{}}
		now := time.Now()
		for i := range streamsPerClinic + 10 {
			s.gap(fmt.Sprint("o", i), clinicA, "0:5", 1, now.Add(time.Duration(i)*time.Second))
		}
		if n := len(s.clinics[clinicA].last); n != streamsPerClinic {
			t.Fatalf("clinic A holds %d streams, want %d", n, streamsPerClinic)
		}
		if got := s.gap("o0", clinicA, "0:6", 1, now.Add(time.Hour)); !got {
			t.Errorf("an evicted stream back at its next number: gap = false, want true (the clinic forgot streams)")
		}
		if got := s.gap(fmt.Sprint("o", streamsPerClinic+9), clinicA, "0:6", 1, now.Add(time.Hour)); got {
			t.Errorf("the newest stream at its next number: gap = true, want false")
		}
	})
}

// TestBusNumbersDrops: a publisher whose outbox overflows numbers the
// events it drops too; a receiver finds the holes, and only them, and its
// Hub resets the clinic's clients. Every batch holds numbers one after the
// other.
func TestBusNumbersDrops(t *testing.T) {
	t.Parallel()
	fb := &fakeBroker{block: make(chan struct{})}
	pub, err := NewBus(fb, BusConfig{Name: "pub", Outbox: 8}, func(Event) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := running(t, pub)
	const n = 200
	for i := range n {
		if err := pub.Publish(ctx, Event{Type: TypeChanged, Clinic: clinicA, Kind: "patient", Record: ids.ID(i % 3)}); err != nil {
			t.Fatal(err)
		}
	}
	close(fb.block) // what the outboxes held goes, the rest was dropped
	testenv.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		for i := range pub.outbox {
			if len(pub.outbox[i]) > 0 {
				return fmt.Errorf("outbox %d not empty", i)
			}
		}
		return nil
	})
	// Then an event of each record again: their numbers jump.
	for i := range 3 {
		if err := pub.Publish(ctx, Event{Type: TypeChanged, Clinic: clinicA, Kind: "patient", Record: ids.ID(i), Reason: "after"}); err != nil {
			t.Fatal(err)
		}
	}
	published := func() (events, after int) {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		for _, d := range fb.published {
			for _, e := range eventsOf(t, d.Body) {
				events++
				if e.Reason == "after" {
					after++
				}
			}
		}
		return events, after
	}
	testenv.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if _, after := published(); after < 3 {
			return fmt.Errorf("%d of the 3 last events published", after)
		}
		return nil
	})
	stop()
	fb.mu.Lock()
	msgs := slices.Clone(fb.published)
	fb.mu.Unlock()
	sent, _ := published()
	if sent >= n+3 {
		t.Fatalf("%d of %d events published in %d messages, want some dropped", sent, n+3, len(msgs))
	}

	// What the receiver must find: a hole in each publisher's numbers.
	last := map[string]uint64{}
	wantGaps := 0
	for _, d := range msgs {
		hdr, _ := d.Headers[seqHeader].(string)
		p, first, ok := parseSeq(hdr)
		if !ok {
			t.Fatalf("message %s without a valid %s header: %v", d.Body, seqHeader, d.Headers)
		}
		k := fmt.Sprint(p)
		if l, seen := last[k]; seen && first > l+1 {
			wantGaps++
		}
		last[k] = first + uint64(len(eventsOf(t, d.Body))) - 1
	}
	if wantGaps == 0 {
		t.Fatalf("no hole in the numbers of %d messages after drops: %v", len(msgs), last)
	}

	recv, c := receiver(t)
	for _, d := range msgs {
		if err := recv.handle(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	if got := recv.Gaps(); got != int64(wantGaps) {
		t.Errorf("receiver found %d gaps, want %d", got, wantGaps)
	}
	resets := 0
	for range sent + wantGaps {
		if e := read(t, c); e.Type == TypeReset {
			resets++
		}
	}
	if resets != wantGaps {
		t.Errorf("client got %d resets, want %d", resets, wantGaps)
	}
}

func eventsOf(t *testing.T, body []byte) []Event {
	t.Helper()
	var es []Event
	if err := json.Unmarshal(body, &es); err == nil {
		return es
	}
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("message %q is no event: %v", body, err)
	}
	return []Event{e}
}

// confirmingBroker remembers the messages its broker confirmed.
type confirmingBroker struct {
	Broker
	mu     sync.Mutex
	bodies []string
}

func (c *confirmingBroker) Publish(ctx context.Context, exchange, key string, m amqpx.Message) error {
	err := c.Broker.Publish(ctx, exchange, key, m)
	if err == nil {
		c.mu.Lock()
		c.bodies = append(c.bodies, string(m.Body))
		c.mu.Unlock()
	}
	return err
}

// waitConfirmed waits until a confirmed message held substr, alone.
func (c *confirmingBroker) waitConfirmed(t *testing.T, substr string) {
	t.Helper()
	testenv.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, b := range c.bodies {
			if strings.Contains(b, substr) {
				if strings.HasPrefix(b, "[") {
					t.Fatalf("%s went in a batch: %s", substr, b)
				}
				return nil
			}
		}
		return fmt.Errorf("no message with %s confirmed yet", substr)
	})
}

// consumer runs Consume of queue into h until stopped.
type consumer struct {
	stop func()
}

func startConsumer(t *testing.T, c *amqpx.Client, queue string, h amqpx.Handler) *consumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Consume(ctx, queue, h) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Consume(%s) = %v, want nil", queue, err)
		}
	}
	t.Cleanup(stop)
	testenv.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		st, _, err := c.Inspect(context.Background(), queue)
		if err != nil {
			return err
		}
		if st.Consumers == 0 {
			return fmt.Errorf("no consumer on %s yet", queue)
		}
		return nil
	})
	return &consumer{stop: stop}
}

// checkEditing fails unless the events are the editing events of records,
// in any order.
func checkEditing(t *testing.T, what string, es []Event, records ...ids.ID) {
	t.Helper()
	var got []ids.ID
	for _, e := range es {
		if e.Type != TypeEditing {
			t.Fatalf("%s: got %+v, want an editing event", what, e)
		}
		got = append(got, e.Record)
	}
	slices.Sort(got)
	if !slices.Equal(got, records) {
		t.Fatalf("%s: editing records %v, want %v", what, got, records)
	}
}

// TestBusLostInQueueResetsViewers runs a clinic's path on real RabbitMQ: a
// cloud node publishes, the clinic's queue (here at most 1 message, oldest
// dropped, as the down queue drops at 10,000) is consumed into the clinic's
// Bus.Handle, whose Hub serves a viewer. A close lost in the queue while
// the clinic's consumer is away is found at the next message: the viewer
// gets a reset, then the sessions open now (the clinic's own, not the one
// whose close was lost), then the event; a viewer connecting later sees no
// stale "Editing by cloud" either.
func TestBusLostInQueueResetsViewers(t *testing.T) {
	url, _ := testenv.RabbitVhost(t)
	suffix := testenv.Name("gap")
	cb := &confirmingBroker{Broker: startAMQP(t, url, "cloud-1")}
	pub, _ := runBus(t, cb, BusConfig{Name: "cloud.1." + suffix})

	raw := startAMQP(t, url, "local-a")
	queue := "test.down." + suffix
	topo := amqpx.Topology{
		Exchanges: []amqpx.Exchange{{Name: Exchange, Kind: "topic"}, {Name: UpExchange, Kind: "topic"}},
		Queues:    []amqpx.Queue{{Name: queue, Args: map[string]any{"x-max-length": int32(1), "x-overflow": "drop-head"}}},
		Bindings:  []amqpx.Binding{{Queue: queue, Exchange: Exchange, Key: ClinicPattern(clinicA)}},
	}
	if err := raw.DeclareOnce(context.Background(), topo); err != nil {
		t.Fatal(err)
	}
	hs := startHub(t, HubConfig{})
	local, got := runBusTo(t, raw, BusConfig{Name: "local.a", Clinic: clinicA, Provisioned: true}, hs.Publish)
	cons := startConsumer(t, raw, queue, local.Handle)
	probe(t, pub, clinicA, got)

	// Open sessions: the cloud's on record 1 (its close is lost below) and
	// the clinic's own on record 2. Once a marker after the cloud's editing
	// (the same record: the same publisher, in order) arrived, nothing of
	// the cloud's is still on its way; should the 1-message queue have
	// dropped one, both go again.
	cloudEditing := Event{Type: TypeEditing, Clinic: clinicA, Kind: "patient", Record: 1, Side: SideCloud, User: "dr.kim", Session: "s1"}
	marks := 0
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		mark := fmt.Sprint("mark", marks)
		if marks > 0 && len(got.matching(func(e Event) bool { return e.Reason == mark })) > 0 && len(hs.Editing(clinicA)) == 1 {
			return nil
		}
		marks++
		for _, e := range []Event{cloudEditing, {Type: TypeChanged, Clinic: clinicA, Kind: "patient", Record: 1, Reason: fmt.Sprint("mark", marks)}} {
			if err := pub.Publish(context.Background(), e); err != nil {
				t.Fatal(err)
			}
		}
		return fmt.Errorf("mark%d not received yet", marks)
	})
	if err := local.Publish(context.Background(), Event{Type: TypeEditing, Clinic: clinicA, Kind: "patient", Record: 2, Side: SideLocal, User: "dr.lee", Session: "s2"}); err != nil {
		t.Fatal(err)
	}
	c := hs.dial(t, clinicA, -1)
	readReset(t, c)
	checkEditing(t, "a viewer connecting", []Event{read(t, c), read(t, c)}, 1, 2)
	gapsBefore := local.Gaps()

	// The clinic's consumer goes; the close of record 1, then a change of
	// it (the same record: the same publisher), reach the queue, which
	// keeps only the change.
	cons.stop()
	if err := pub.Publish(context.Background(), Event{Type: TypeClosed, Clinic: clinicA, Kind: "patient", Record: 1, Session: "s1", Reason: ReasonReleased}); err != nil {
		t.Fatal(err)
	}
	cb.waitConfirmed(t, `"reason":"released"`)
	if err := pub.Publish(context.Background(), Event{Type: TypeChanged, Clinic: clinicA, Kind: "patient", Record: 1, Reason: "after"}); err != nil {
		t.Fatal(err)
	}
	cb.waitConfirmed(t, `"reason":"after"`)
	startConsumer(t, raw, queue, local.Handle)

	readReset(t, c)
	checkEditing(t, "after the reset", []Event{read(t, c)}, 2)
	if e := read(t, c); e.Type != TypeChanged || e.Record != 1 || e.Reason != "after" {
		t.Fatalf("then got %+v, want the change of record 1", e)
	}
	if got := local.Gaps() - gapsBefore; got != 1 {
		t.Errorf("gaps found = %d, want 1", got)
	}
	checkEditing(t, "the hub's sessions after the gap", hs.Editing(clinicA), 2)
	c2 := hs.dial(t, clinicA, -1)
	readReset(t, c2)
	checkEditing(t, "a viewer connecting after the gap", []Event{read(t, c2)}, 2)
}

// TestBusNoLossNoReset: on real RabbitMQ, events that all arrive (one at a
// time and in batches, several records and publishers) and a redelivered
// old message reset nobody, and nothing is counted as lost.
func TestBusNoLossNoReset(t *testing.T) {
	url, _ := testenv.RabbitVhost(t)
	suffix := testenv.Name("nogap")
	pub, _ := runBus(t, startAMQP(t, url, "cloud-1"), BusConfig{Name: "cloud.1." + suffix})
	raw := startAMQP(t, url, "cloud-2")
	hs := startHub(t, HubConfig{})
	recv, got := runBusTo(t, raw, BusConfig{Name: "cloud.2." + suffix}, hs.Publish)
	probe(t, pub, clinicA, got)
	probe(t, pub, clinicB, got)

	c := hs.dial(t, clinicA, -1)
	readReset(t, c)
	// At most 200 events: the default outbox (256 a publisher) drops none.
	const n = 200
	publish := func(e Event) {
		t.Helper()
		if err := pub.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	// readA reads clinic A's next events but probes, failing on a reset.
	readA := func(what string) Event {
		t.Helper()
		for {
			e := read(t, c)
			if e.Type == TypeReset {
				t.Fatalf("%s: got a reset, want none (nothing was lost)", what)
			}
			if !isProbe(e) {
				return e
			}
		}
	}
	for i := range n {
		e := Event{Type: TypeSaved, Clinic: clinicA, Kind: "patient", Record: ids.ID(1 + i%5), Reason: fmt.Sprint(i)}
		if i%2 == 0 {
			e.Clinic = clinicB
		}
		publish(e)
	}
	for i := range n / 2 {
		readA(fmt.Sprintf("event %d of %d", i+1, n/2))
	}
	// A redelivery of an old message: record 1's publisher, number 1.
	old, _ := json.Marshal(Event{Type: TypeChanged, Clinic: clinicA, Kind: "patient", Record: 1, Reason: "old"})
	key := RoutingKey(clinicA, "patient", 1)
	if err := raw.Publish(context.Background(), Exchange, key, amqpx.Message{Body: old, Type: MessageType,
		Headers: map[string]any{originHeader: pub.origin, seqHeader: fmt.Sprintf("%d:1", shard(key))}}); err != nil {
		t.Fatal(err)
	}
	if e := readA("the redelivered message"); e.Reason != "old" {
		t.Fatalf("got %+v, want the redelivered event", e)
	}
	publish(Event{Type: TypeSaved, Clinic: clinicA, Kind: "patient", Record: 1, Reason: "last"})
	if e := readA("the event after it"); e.Reason != "last" {
		t.Fatalf("got %+v, want the last event", e)
	}
	if g := recv.Gaps(); g != 0 {
		t.Errorf("receiver found %d gaps, want 0", g)
	}
}

// TestHubResync: every client of the clinic gets a reset and the sessions
// open now, others nothing; a client resuming from before it is reset
// too; Resync forgets every session of the clinic, a Bus's reset only
// those of its origin.
func TestHubResync(t *testing.T) {
	t.Parallel()
	hs := startHub(t, HubConfig{})
	editing := func(rec int, origin string) Event {
		return Event{Type: TypeEditing, Clinic: clinicA, Kind: "patient", Record: ids.ID(rec), Session: fmt.Sprint("s", rec), origin: origin}
	}
	hs.Publish(editing(1, "o1"))
	hs.Publish(editing(2, "o2"))
	hs.Publish(Event{Type: TypeEditing, Clinic: clinicB, Kind: "patient", Record: 3, origin: "o1"})
	a := hs.dial(t, clinicA, -1)
	first := readReset(t, a)
	checkEditing(t, "on connect", []Event{read(t, a), read(t, a)}, 1, 2)
	b := hs.dial(t, clinicB, -1)
	readReset(t, b)
	read(t, b)

	hs.Publish(ev(clinicA, 7))
	before := read(t, a)
	hs.Publish(Event{Type: TypeReset, Clinic: clinicA, origin: "o1"}) // from a Bus
	r := readReset(t, a)
	if r.Seq <= before.Seq || r.Clinic != clinicA {
		t.Fatalf("reset = %+v, want clinic A after seq %d", r, before.Seq)
	}
	checkEditing(t, "after o1's gap", []Event{read(t, a)}, 2)
	if got := hs.Editing(clinicB); len(got) != 1 {
		t.Errorf("clinic B's sessions = %+v, want its one kept", got)
	}
	hs.Publish(ev(clinicB, 8))
	if e := read(t, b); e.Type != TypeSaved || e.Record != 8 {
		t.Fatalf("clinic B's client got %+v, want only its own event", e)
	}
	// Resuming from before the reset: reset again; from after: resumed.
	again := hs.dial(t, clinicA, first.Seq)
	if e := readReset(t, again); e.Seq < r.Seq {
		t.Errorf("resume across a reset: reset at %d, want %d or later", e.Seq, r.Seq)
	}
	checkEditing(t, "resumed across a reset", []Event{read(t, again)}, 2)
	after := hs.dial(t, clinicA, r.Seq)
	hs.Publish(ev(clinicA, 9))
	if e := read(t, after); e.Type != TypeSaved || e.Record != 9 {
		t.Fatalf("resumed after the reset: got %+v, want the live event", e)
	}
	if e := read(t, a); e.Type != TypeSaved || e.Record != 9 {
		t.Fatalf("got %+v, want record 9", e)
	}
	hs.Resync(clinicA)
	readReset(t, a)
	hs.Publish(ev(clinicA, 10))
	if e := read(t, a); e.Type != TypeSaved || e.Record != 10 {
		t.Fatalf("after Resync got %+v, want no session (all forgotten), then record 10", e)
	}
	if got := hs.Editing(clinicA); len(got) != 0 {
		t.Errorf("Editing(A) after Resync = %+v, want none", got)
	}
}

// BenchmarkStreams is a cloud node's receiver at 10,000 clinics, each heard
// from 4 origins (the clinic and 3 other nodes) through 4 publishers: the
// memory a stream takes, what a message's check costs, and a prune pass.
func BenchmarkStreams(b *testing.B) {
	const clinics, origins = 10000, 4
	names := make([]string, origins)
	for i := range names {
		names[i] = fmt.Sprintf("%016x", i+1)
	}
	hdrs := make([]string, publishers)
	for p := range hdrs {
		hdrs[p] = fmt.Sprint(p, ":1")
	}
	now := time.Now()
	fill := func() *streams {
		s := &streams{clinics: map[ids.ID]*clinicStreams{}, lastPrune: now}
		for c := range clinics {
			for _, o := range names {
				for p := range publishers {
					// As from a delivery: its own copy of the origin.
					s.gap(strings.Clone(o), ids.ID(c+1), hdrs[p], 1, now)
				}
			}
		}
		return s
	}
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	s := fill()
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	n := clinics * origins * publishers
	perStream := float64(ms1.HeapAlloc-ms0.HeapAlloc) / float64(n)
	start := time.Now()
	s.mu.Lock()
	s.pruneLocked(0) // a pass that forgets nothing
	s.mu.Unlock()
	prune := time.Since(start)
	b.ResetTimer()
	for i := range b.N {
		s.gap(names[i%origins], ids.ID(1+i%clinics), hdrs[i%publishers], 1, now)
	}
	b.ReportMetric(perStream, "bytes/stream")
	b.ReportMetric(float64(prune.Microseconds()), "µs/prune")
}

// TestBusBatchCutAtHoles: a batch never spans a hole in its clinic's
// numbers (an event dropped between two that wait together), or a
// receiver would count the events after the hole as the hole's.
func TestBusBatchCutAtHoles(t *testing.T) {
	t.Parallel()
	fb := &fakeBroker{}
	b, err := NewBus(fb, BusConfig{Name: "pub"}, func(Event) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := func(c ids.ID, num uint64) outgoing {
		body, _ := json.Marshal(Event{Type: TypeChanged, Clinic: c, Kind: "patient", Record: 1})
		return outgoing{clinic: c, num: num, key: RoutingKey(c, "patient", 1), body: body}
	}
	// Waiting before Run starts: they go out together, cut where needed.
	for _, o := range []outgoing{out(clinicA, 1), out(clinicA, 2), out(clinicB, 7), out(clinicA, 4), out(clinicA, 5), out(clinicA, 7)} {
		b.outbox[2] <- o
	}
	_, stop := running(t, b)
	var got []string
	testenv.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		got = got[:0]
		for _, d := range fb.published {
			got = append(got, fmt.Sprint(d.RoutingKey, " ", d.Headers[seqHeader], " ", len(eventsOf(t, d.Body))))
		}
		if len(got) < 4 {
			return fmt.Errorf("%d messages published", len(got))
		}
		return nil
	})
	stop()
	want := []string{"clinic.1001.batch 2:1 2", "clinic.1001.batch 2:4 2", "clinic.1001.patient.1 2:7 1", "clinic.2002.patient.1 2:7 1"}
	if !slices.Equal(got, want) {
		t.Errorf("messages (key, %s, events) =\n%q, want\n%q", seqHeader, got, want)
	}
}

// receiver returns a Bus that hands what it receives to a Hub, and a client
// of clinic A on that Hub, past its first reset.
func receiver(t *testing.T) (*Bus, *websocket.Conn) {
	t.Helper()
	hs := startHub(t, HubConfig{})
	recv, err := NewBus(&fakeBroker{}, BusConfig{Name: "recv"}, hs.Publish, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := hs.dial(t, clinicA, -1)
	readReset(t, c)
	return recv, c
}
