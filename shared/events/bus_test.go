package events

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
)

// sink records what a Bus delivers.
type sink struct {
	mu  sync.Mutex
	evs []Event
}

func (s *sink) deliver(e Event) {
	s.mu.Lock()
	s.evs = append(s.evs, e)
	s.mu.Unlock()
}

// matching returns the delivered events f accepts.
func (s *sink) matching(f func(Event) bool) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	for _, e := range s.evs {
		if f(e) {
			out = append(out, e)
		}
	}
	return out
}

// startAMQP runs an amqpx client (one "server's" connection) on url.
func startAMQP(t *testing.T, url, name string) *amqpx.Client {
	t.Helper()
	c, err := amqpx.New(amqpx.Config{URL: url, ConnectionName: name, ReconnectMin: 50 * time.Millisecond, ReconnectMax: time.Second}, amqpx.Topology{}, nil, nil)
	if err != nil {
		t.Fatalf("amqpx.New() error = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("amqpx Run() = %v, want nil", err)
		}
	})
	testenv.CheckFor(t, 15*time.Second, 10*time.Millisecond, c.Ready)
	return c
}

// runBus runs a Bus until the test ends, checking that Run returns nil.
func runBus(t *testing.T, broker Broker, cfg BusConfig) (*Bus, *sink) {
	t.Helper()
	return runBusTo(t, broker, cfg, nil)
}

// runBusTo is runBus whose events also go to also (a Hub's Publish), if not
// nil, after the sink.
func runBusTo(t *testing.T, broker Broker, cfg BusConfig, also func(Event)) (*Bus, *sink) {
	t.Helper()
	var s sink
	deliver := s.deliver
	if also != nil {
		deliver = func(e Event) {
			s.deliver(e)
			also(e)
		}
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := NewBus(broker, cfg, deliver, log)
	if err != nil {
		t.Fatalf("NewBus() error = %v", err)
	}
	running(t, b)
	return b, &s
}

// running runs b until stop (or the test's end, whichever comes first), and
// returns the context it runs under. stop waits for Run, which must return
// nil within 10 s.
func running(t *testing.T, b *Bus) (ctx context.Context, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Bus.Run() = %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Bus.Run() did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return ctx, stop
}

func isProbe(e Event) bool { return e.Type == TypeChanged && e.Record == 0 }

// probe publishes probe events through b until every sink got one: then the
// queues exist and are bound (events published before are unroutable).
func probe(t *testing.T, b *Bus, clinic ids.ID, sinks ...*sink) {
	t.Helper()
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for i, s := range sinks {
			if len(s.matching(isProbe)) == 0 {
				if err := b.Publish(context.Background(), Event{Type: TypeChanged, Clinic: clinic, Kind: "probe"}); err != nil {
					t.Fatalf("Publish(probe) error = %v", err)
				}
				return fmt.Errorf("sink %d has no probe yet", i)
			}
		}
		return nil
	})
}

// TestBusRoundTrip runs three "servers" on real RabbitMQ: a clinic's
// sc-local bound to clinic A, and two cloud nodes bound to every clinic; one
// node publishes. Each consumer gets exactly its events, in order per record;
// the publisher gets its own once (locally, not again from the broker); an
// event whose body names another clinic than its routing key is dropped; a
// broker outage loses events at worst and never blocks Publish.
func TestBusRoundTrip(t *testing.T) {
	url, vhost := testenv.RabbitVhost(t)
	suffix := testenv.Name("bus")
	pub, pubSink := runBus(t, startAMQP(t, url, "cloud-1"), BusConfig{Name: "cloud.1." + suffix})
	_, localSink := runBus(t, startAMQP(t, url, "local-a"), BusConfig{Name: "local.a." + suffix, Clinic: clinicA})
	rawAMQP := startAMQP(t, url, "cloud-2")
	cloud2, cloudSink := runBus(t, rawAMQP, BusConfig{Name: "cloud.2." + suffix})
	probe(t, pub, clinicA, localSink, cloudSink)

	const n = 30
	var wantA, wantB []Event
	for i := 1; i <= n; i++ {
		a := Event{Type: TypeSaved, Clinic: clinicA, Kind: "patient", Record: 7, Side: SideCloud, User: "dr.kim", Session: "s1", Version: version.V{A: 2, B: uint32(i)}}
		if err := pub.Publish(context.Background(), a); err != nil {
			t.Fatalf("Publish() error = %v", err)
		}
		wantA = append(wantA, a)
		if i%3 == 0 {
			b := Event{Type: TypeTransfer, Clinic: clinicB, Kind: "image", Record: ids.ID(100 + i), Transfer: &Transfer{State: TransferUploading, BytesDone: int64(i), BytesTotal: n}}
			if err := pub.Publish(context.Background(), b); err != nil {
				t.Fatalf("Publish() error = %v", err)
			}
			wantB = append(wantB, b)
		}
	}
	// A body naming clinic B under clinic A's key: dropped by every consumer.
	forged, _ := json.Marshal(Event{Type: TypeChanged, Clinic: clinicB, Kind: "patient", Record: 666})
	if err := rawAMQP.Publish(context.Background(), Exchange, RoutingKey(clinicA, "patient", 666), amqpx.Message{Body: forged}); err != nil {
		t.Fatalf("raw Publish() error = %v", err)
	}

	real := func(e Event) bool { return !isProbe(e) }
	ofClinic := func(c ids.ID) func(Event) bool {
		return func(e Event) bool { return real(e) && e.Clinic == c }
	}
	testenv.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if got := len(localSink.matching(real)); got < len(wantA) {
			return fmt.Errorf("sc-local got %d events, want %d", got, len(wantA))
		}
		if got := len(cloudSink.matching(real)); got < len(wantA)+len(wantB) {
			return fmt.Errorf("cloud node got %d events, want %d", got, len(wantA)+len(wantB))
		}
		return nil
	})
	// A marker from the other node, after everything: once it arrived, each
	// queue has been consumed past the events above.
	if err := cloud2.Publish(context.Background(), Event{Type: TypeClosed, Clinic: clinicA, Kind: "patient", Record: 8}); err != nil {
		t.Fatal(err)
	}
	isMarker := func(e Event) bool { return e.Type == TypeClosed && e.Record == 8 }
	testenv.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		for name, s := range map[string]*sink{"sc-local": localSink, "publisher": pubSink} {
			if len(s.matching(isMarker)) == 0 {
				return fmt.Errorf("%s has not got the marker", name)
			}
		}
		return nil
	})

	// Events of one record keep their order; different records may not.
	check := func(name string, s *sink, f func(Event) bool, want []Event) {
		t.Helper()
		got := s.matching(f)
		slices.SortStableFunc(got, func(a, b Event) int { return cmp.Compare(a.Record, b.Record) })
		if len(got) != len(want) {
			t.Fatalf("%s got %d events, want %d: %+v", name, len(got), len(want), got)
		}
		for i := range want {
			w := want[i]
			w.Seq, w.At = 0, got[i].At
			if got[i].Seq != 0 || got[i].At.IsZero() {
				t.Errorf("%s event %d: seq %d, at %v; want 0 (a Hub numbers) and a time", name, i, got[i].Seq, got[i].At)
			}
			gw, _ := json.Marshal(got[i])
			ww, _ := json.Marshal(w)
			if string(gw) != string(ww) {
				t.Fatalf("%s event %d =\n%s, want\n%s", name, i, gw, ww)
			}
		}
	}
	notMarker := func(f func(Event) bool) func(Event) bool {
		return func(e Event) bool { return f(e) && !isMarker(e) }
	}
	check("sc-local (clinic A)", localSink, notMarker(real), wantA)
	check("cloud node, clinic A", cloudSink, notMarker(ofClinic(clinicA)), wantA)
	check("cloud node, clinic B", cloudSink, ofClinic(clinicB), wantB)
	check("publisher (local delivery only), clinic A", pubSink, notMarker(ofClinic(clinicA)), wantA)
	check("publisher, clinic B", pubSink, ofClinic(clinicB), wantB)

	// Outage: the broker drops every connection of the vhost.
	testenv.RabbitCloseConnections(t, vhost)
	start := time.Now()
	for i := range 2 * DefaultOutbox {
		_ = pub.Publish(context.Background(), Event{Type: TypeChanged, Clinic: clinicA, Kind: "patient", Record: ids.ID(1000 + i)})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Publish during an outage took %s for %d events, want no waiting for the broker", d, 2*DefaultOutbox)
	}
	// Afterwards events flow again (some of the outage's may be lost).
	after := Event{Type: TypeChanged, Clinic: clinicA, Kind: "patient", Record: 9}
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		if len(localSink.matching(func(e Event) bool { return e.Record == 9 })) > 0 {
			return nil
		}
		_ = pub.Publish(context.Background(), after)
		return errors.New("no event after the outage yet")
	})
}

// fakeBroker records publishes and can hold them.
type fakeBroker struct {
	mu        sync.Mutex
	declared  []amqpx.Topology
	block     chan struct{} // Publish waits on it when non-nil
	published []amqpx.Delivery
}

func (f *fakeBroker) Declare(_ context.Context, t amqpx.Topology) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.declared = append(f.declared, t)
	return nil
}

func (f *fakeBroker) Publish(ctx context.Context, _, key string, m amqpx.Message) error {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.published = append(f.published, amqpx.Delivery{RoutingKey: key, Body: m.Body, Headers: m.Headers})
	return nil
}

// TestBusBatchesBursts: events that wait in the outbox while the broker is
// slow go out as few messages, one clinic per message, and a receiving Bus
// delivers every one of them, in order per record.
func TestBusBatchesBursts(t *testing.T) {
	t.Parallel()
	fb := &fakeBroker{block: make(chan struct{})}
	pub, err := NewBus(fb, BusConfig{Name: "pub"}, func(Event) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := running(t, pub)
	var want []Event
	for i := range 300 {
		c := clinicA
		if i%4 == 0 {
			c = clinicB
		}
		e := Event{Type: TypeChanged, Clinic: c, Kind: "study", Record: ids.ID(1 + i%7), Version: version.V{A: uint32(i + 1)}}
		if err := pub.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
	}
	close(fb.block) // the broker answers again: the burst goes
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var n int
		fb.mu.Lock()
		for _, d := range fb.published {
			var es []Event
			if err := json.Unmarshal(d.Body, &es); err != nil {
				es = []Event{{}}
			}
			n += len(es)
		}
		fb.mu.Unlock()
		if n < len(want) {
			return fmt.Errorf("%d events published, want %d", n, len(want))
		}
		return nil
	})
	stop()
	fb.mu.Lock()
	msgs := fb.published
	fb.mu.Unlock()
	if len(msgs) > len(want)/4 {
		t.Errorf("%d messages for a burst of %d events, want a few (batches)", len(msgs), len(want))
	}
	var local, cloud sink
	recvA, err := NewBus(&fakeBroker{}, BusConfig{Name: "local", Clinic: clinicA}, local.deliver, nil)
	if err != nil {
		t.Fatal(err)
	}
	recvAll, err := NewBus(&fakeBroker{}, BusConfig{Name: "cloud"}, cloud.deliver, nil)
	if err != nil {
		t.Fatal(err)
	}
	batches := 0
	for _, d := range msgs {
		if d.RoutingKey == BatchKey(clinicA) || d.RoutingKey == BatchKey(clinicB) {
			batches++
		}
		for _, r := range []*Bus{recvA, recvAll} {
			if err := r.handle(context.Background(), d); err != nil {
				t.Fatal(err)
			}
		}
	}
	if batches == 0 {
		t.Fatalf("no batch message among %d", len(msgs))
	}
	byRecord := func(evs []Event, c ids.ID) map[string][]uint32 {
		out := map[string][]uint32{}
		for _, e := range evs {
			if c == 0 || e.Clinic == c {
				k := fmt.Sprint(e.Clinic, "/", e.Record)
				out[k] = append(out[k], e.Version.A)
			}
		}
		return out
	}
	all := cloud.matching(func(Event) bool { return true })
	if fmt.Sprint(byRecord(all, 0)) != fmt.Sprint(byRecord(want, 0)) {
		t.Errorf("cloud bus delivered per record\n%v\nwant\n%v", byRecord(all, 0), byRecord(want, 0))
	}
	onlyA := local.matching(func(Event) bool { return true })
	if fmt.Sprint(byRecord(onlyA, 0)) != fmt.Sprint(byRecord(want, clinicA)) {
		t.Errorf("clinic A's bus delivered per record\n%v\nwant\n%v", byRecord(onlyA, 0), byRecord(want, clinicA))
	}
}

func (f *fakeBroker) Consume(ctx context.Context, _ string, _ amqpx.Handler) error {
	<-ctx.Done()
	return nil
}

func TestNewBusConfig(t *testing.T) {
	t.Parallel()
	deliver := func(Event) {}
	tests := []struct {
		name string
		cfg  BusConfig
		ok   bool
	}{
		{"cloud", BusConfig{Name: "cloud.12288"}, true},
		{"local", BusConfig{Name: "local.1001", Clinic: 1001}, true},
		{"no name", BusConfig{}, false},
		{"name with a space", BusConfig{Name: "a b"}, false},
		{"name with a wildcard", BusConfig{Name: "a.*"}, false},
		{"negative outbox", BusConfig{Name: "a", Outbox: -1}, false},
	}
	for _, tt := range tests {
		_, err := NewBus(&fakeBroker{}, tt.cfg, deliver, nil)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
			t.Errorf("%s: NewBus(%+v) error = %v, want ok=%v", tt.name, tt.cfg, err, tt.ok)
		}
	}
	if _, err := NewBus(nil, BusConfig{Name: "a"}, deliver, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewBus(nil broker) error = %v, want ErrInvalidConfig", err)
	}
	if _, err := NewBus(&fakeBroker{}, BusConfig{Name: "a"}, nil, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewBus(nil deliver) error = %v, want ErrInvalidConfig", err)
	}
}

func TestBusTopology(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		clinic ids.ID
		key    string
	}{{clinicA, "clinic.1001.#"}, {0, "clinic.#"}} {
		b, err := NewBus(&fakeBroker{}, BusConfig{Name: "n", Clinic: tt.clinic}, func(Event) {}, nil)
		if err != nil {
			t.Fatal(err)
		}
		topo := b.Topology()
		if b.Queue() != "scsync.events.n" || topo.Exchanges[0] != (amqpx.Exchange{Name: "scsync.events", Kind: "topic"}) ||
			topo.Bindings[0] != (amqpx.Binding{Queue: "scsync.events.n", Exchange: "scsync.events", Key: tt.key}) {
			t.Errorf("clinic %d: queue %q, topology %+v; want binding key %q", tt.clinic, b.Queue(), topo, tt.key)
		}
	}
}

// TestBusPublishNeverBlocks: with the broker stuck (or Run not running),
// Publish still delivers locally at once and drops what does not fit.
func TestBusPublishNeverBlocks(t *testing.T) {
	t.Parallel()
	fb := &fakeBroker{block: make(chan struct{})}
	b, s := runBus(t, fb, BusConfig{Name: "n", Outbox: 8, PublishTimeout: time.Hour})
	start := time.Now()
	for i := range 1000 {
		if err := b.Publish(context.Background(), Event{Type: TypeSaved, Clinic: 1, Kind: "patient", Record: ids.ID(i)}); err != nil {
			t.Fatalf("Publish() error = %v", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("1000 Publish calls took %s with the broker stuck", d)
	}
	if got := len(s.matching(func(Event) bool { return true })); got != 1000 {
		t.Errorf("delivered locally %d events, want 1000", got)
	}
	if err := b.Publish(context.Background(), Event{Type: "bogus"}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Publish(invalid) = %v, want ErrInvalidEvent", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Publish(ctx, Event{Type: TypeSaved, Clinic: 1, Kind: "patient"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish(cancelled ctx) = %v, want context.Canceled", err)
	}
}

func TestBusHandle(t *testing.T) {
	t.Parallel()
	var s sink
	b, err := NewBus(&fakeBroker{}, BusConfig{Name: "n", Clinic: clinicA}, s.deliver, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := func(e Event) []byte { d, _ := json.Marshal(e); return d }
	good := Event{Seq: 55, Type: TypeSaved, Clinic: clinicA, Kind: "patient", Record: 1}
	tests := []struct {
		name    string
		d       amqpx.Delivery
		deliver bool
	}{
		{"valid", amqpx.Delivery{RoutingKey: "clinic.1001.patient.1", Body: body(good)}, true},
		{"own", amqpx.Delivery{RoutingKey: "clinic.1001.patient.1", Body: body(good), Headers: map[string]any{originHeader: b.origin}}, false},
		{"another bus", amqpx.Delivery{RoutingKey: "clinic.1001.patient.1", Body: body(good), Headers: map[string]any{originHeader: "other"}}, true},
		{"not JSON", amqpx.Delivery{RoutingKey: "clinic.1001.patient.1", Body: []byte("{")}, false},
		{"key of another clinic", amqpx.Delivery{RoutingKey: "clinic.2002.patient.1", Body: body(good)}, false},
		{"other clinic, not ours", amqpx.Delivery{RoutingKey: "clinic.2002.patient.1", Body: body(Event{Type: TypeSaved, Clinic: clinicB, Kind: "patient"})}, false},
		{"reset", amqpx.Delivery{RoutingKey: "clinic.1001.patient.1", Body: body(Event{Type: TypeReset, Clinic: clinicA})}, false},
		{"future type", amqpx.Delivery{RoutingKey: "clinic.1001.patient.1", Body: body(Event{Type: "comment", Clinic: clinicA})}, true},
		{"batch", amqpx.Delivery{RoutingKey: BatchKey(clinicA), Body: []byte("[" + string(body(good)) + "," + string(body(good)) + "]")}, true},
		{"batch of another clinic's events", amqpx.Delivery{RoutingKey: BatchKey(clinicA), Body: []byte("[" + string(body(Event{Type: TypeSaved, Clinic: clinicB, Kind: "patient"})) + "]")}, false},
		{"batch not JSON", amqpx.Delivery{RoutingKey: BatchKey(clinicA), Body: []byte("[{")}, false},
	}
	for _, tt := range tests {
		before := len(s.matching(func(Event) bool { return true }))
		if err := b.handle(context.Background(), tt.d); err != nil {
			t.Errorf("%s: handle() = %v, want nil (never redeliver)", tt.name, err)
		}
		got := s.matching(func(Event) bool { return true })
		if delivered := len(got) > before; delivered != tt.deliver {
			t.Errorf("%s: delivered = %v, want %v", tt.name, delivered, tt.deliver)
		}
		if tt.name == "batch" && len(got)-before != 2 {
			t.Errorf("batch: delivered %d events, want 2", len(got)-before)
		}
		if len(got) > before && got[len(got)-1].Seq != 0 {
			t.Errorf("%s: delivered seq %d, want 0 (the Hub numbers)", tt.name, got[len(got)-1].Seq)
		}
	}
}
