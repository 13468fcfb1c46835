package amqpx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/testenv"
)

// testClient is a running Client in its own vhost.
type testClient struct {
	*Client
	t     testing.TB
	reg   *prometheus.Registry
	url   string
	vhost string
}

// startClient creates a vhost, runs a Client with topo on it and stops it
// (checking that Run returns nil promptly) when the test ends.
func startClient(t *testing.T, topo Topology) *testClient {
	t.Helper()
	return startClientWith(t, topo, nil)
}

// startClientWith is startClient with the Config changed by edit first.
func startClientWith(t *testing.T, topo Topology, edit func(*Config)) *testClient {
	t.Helper()
	url, vhost := testenv.RabbitVhost(t)
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := Config{
		URL:            url,
		ConnectionName: t.Name(),
		ReconnectMin:   50 * time.Millisecond,
		ReconnectMax:   time.Second,
		ConfirmTimeout: 10 * time.Second,
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := New(cfg, topo, log, reg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	c.retryPause = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run() did not return within 10s of cancel")
		}
	})
	testenv.CheckFor(t, 15*time.Second, 10*time.Millisecond, c.Ready)
	return &testClient{Client: c, t: t, reg: reg, url: url, vhost: vhost}
}

// consume runs c.Consume in the background until the test ends.
func (tc *testClient) consume(queue string, h Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tc.Consume(ctx, queue, h) }()
	tc.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tc.t.Errorf("Consume(%q) = %v, want nil", queue, err)
			}
		case <-time.After(10 * time.Second):
			tc.t.Errorf("Consume(%q) did not return within 10s of cancel", queue)
		}
	})
}

// metric returns the value of a counter or gauge, summed over series whose
// labels include want.
func (tc *testClient) metric(name string, want ...string) float64 {
	tc.t.Helper()
	mfs, err := tc.reg.Gather()
	if err != nil {
		tc.t.Fatalf("Gather() error = %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "scsync_amqp_"+name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(want); i += 2 {
				if labels[want[i]] != want[i+1] {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// waitMetric polls until metric name reaches at least n.
func (tc *testClient) waitMetric(n float64, name string, labels ...string) {
	tc.t.Helper()
	testenv.CheckFor(tc.t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := tc.metric(name, labels...); got < n {
			return fmt.Errorf("%s%v = %v, want >= %v", name, labels, got, n)
		}
		return nil
	})
}

// queueLen returns the number of ready messages in queue, using a separate
// plain connection.
func (tc *testClient) queueLen(queue string) (int, error) {
	conn, err := amqp.Dial(tc.url)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	return q.Messages, nil
}

// collector records deliveries for handlers.
type collector struct {
	mu sync.Mutex
	ds []Delivery
}

func (c *collector) add(d Delivery) {
	c.mu.Lock()
	c.ds = append(c.ds, d)
	c.mu.Unlock()
}

func (c *collector) all() []Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Delivery(nil), c.ds...)
}

func (c *collector) waitLen(t testing.TB, n int) []Delivery {
	t.Helper()
	testenv.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := len(c.all()); got < n {
			return fmt.Errorf("got %d deliveries, want %d", got, n)
		}
		return nil
	})
	return c.all()
}

// TestShutdownNoLeak runs first and alone (the other integration tests are
// parallel and wait), so the goroutine count is meaningful: after a
// reconnect and a cancel, Run returns promptly and nothing is left behind.
func TestShutdownNoLeak(t *testing.T) {
	url, vhost := testenv.RabbitVhost(t)
	topo := Topology{Queues: []Queue{{Name: "q"}}}
	before := runtime.NumGoroutine()

	c, err := New(Config{URL: url, ConnectionName: t.Name(), ReconnectMin: 50 * time.Millisecond}, topo, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	got := make(chan string, 10)
	consumeDone := make(chan error, 1)
	go func() {
		consumeDone <- c.Consume(ctx, "q", func(_ context.Context, d Delivery) error {
			got <- string(d.Body)
			return nil
		})
	}()
	roundTrip := func(body string) {
		t.Helper()
		pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
		defer pcancel()
		for {
			err := c.Publish(pctx, "", "q", Message{Body: []byte(body)})
			if err == nil {
				break
			}
			if pctx.Err() != nil {
				t.Fatalf("Publish(%q) = %v", body, err)
			}
		}
		select {
		case b := <-got:
			if b != body {
				t.Fatalf("consumed %q, want %q", b, body)
			}
		case <-pctx.Done():
			t.Fatalf("message %q not consumed", body)
		}
	}
	roundTrip("before")
	testenv.RabbitCloseConnections(t, vhost)
	roundTrip("after")

	cancel()
	start := time.Now()
	select {
	case err := <-runDone:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Run() did not return within 5s of cancel")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Run() returned %s after cancel, want promptly", took)
	}
	if err := <-consumeDone; err != nil {
		t.Errorf("Consume() = %v, want nil", err)
	}
	if err := c.Publish(context.Background(), "", "q", Message{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish() after Run returned = %v, want ErrClosed", err)
	}
	if err := c.Run(context.Background()); err == nil {
		t.Errorf("second Run() = nil, want an error")
	}
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, want <= %d:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tc := startClient(t, Topology{
		Exchanges: []Exchange{{Name: "ex", Kind: "topic"}},
		Queues:    []Queue{{Name: "q", Quorum: true}},
		Bindings:  []Binding{{Queue: "q", Exchange: "ex", Key: "change.#"}},
	})
	var calls atomic.Int32
	var got collector
	tc.consume("q", func(_ context.Context, d Delivery) error {
		got.add(d)
		if calls.Add(1) == 1 {
			return errors.New("database briefly unavailable") // transient: redelivered
		}
		return nil
	})

	ts := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	m := Message{
		Body:            []byte(`{"id":1}`),
		ContentType:     "application/json",
		ContentEncoding: "identity",
		Type:            "change",
		MessageID:       "m-1",
		UserID:          "guest",
		Headers:         map[string]any{"clinic": "c1"},
		Timestamp:       ts,
	}
	if err := tc.Publish(t.Context(), "ex", "change.patient", m); err != nil {
		t.Fatalf("Publish() = %v, want nil", err)
	}
	ds := got.waitLen(t, 2)
	first, second := ds[0], ds[1]
	if first.Redelivered || !second.Redelivered {
		t.Errorf("Redelivered = %v, %v, want false, true (no ack before the handler succeeds)", first.Redelivered, second.Redelivered)
	}
	want := Delivery{
		Body: m.Body, ContentType: m.ContentType, ContentEncoding: m.ContentEncoding, Type: m.Type,
		MessageID: m.MessageID, UserID: m.UserID, Exchange: "ex", RoutingKey: "change.patient",
		Headers: m.Headers, Timestamp: ts,
	}
	first.Timestamp = first.Timestamp.UTC()
	if fmt.Sprint(first) != fmt.Sprint(want) {
		t.Errorf("delivery = %+v, want %+v", first, want)
	}
	tc.waitMetric(1, "consumed_total", "result", resultAck)
	if n, err := tc.queueLen("q"); err != nil || n != 0 {
		t.Errorf("queue length after ack = %d, %v, want 0", n, err)
	}
	if got := len(got.all()); got != 2 {
		t.Errorf("handler calls = %d, want 2", got)
	}
	if got := tc.metric("consumed_total", "result", resultRetry); got != 1 {
		t.Errorf("consumed_total{retry} = %v, want 1", got)
	}
	if got := tc.metric("published_total"); got != 1 {
		t.Errorf("published_total = %v, want 1", got)
	}
	// A generated MessageID reaches the consumer.
	if err := tc.Publish(t.Context(), "ex", "change.study", Message{Body: []byte("x")}); err != nil {
		t.Fatalf("Publish() = %v", err)
	}
	if d := got.waitLen(t, 3)[2]; d.MessageID == "" {
		t.Errorf("MessageID of a message published without one = %q, want generated", d.MessageID)
	}
}

// TestNoConfirmedMessageLost kills the connection twice while several
// goroutines publish; every message whose Publish returned nil must be
// consumed.
func TestNoConfirmedMessageLost(t *testing.T) {
	t.Parallel()
	tc := startClient(t, Topology{
		Exchanges: []Exchange{{Name: "ex", Kind: "direct"}},
		Queues:    []Queue{{Name: "q", Quorum: true}},
		Bindings:  []Binding{{Queue: "q", Exchange: "ex", Key: "k"}},
	})
	var mu sync.Mutex
	consumed := map[string]int{}
	tc.consume("q", func(_ context.Context, d Delivery) error {
		mu.Lock()
		consumed[d.MessageID]++
		mu.Unlock()
		return nil
	})

	var (
		confirmedMu sync.Mutex
		confirmed   []string
		failures    atomic.Int64
		stop        = make(chan struct{})
		wg          sync.WaitGroup
	)
	nConfirmed := func() int {
		confirmedMu.Lock()
		defer confirmedMu.Unlock()
		return len(confirmed)
	}
	for g := range 4 {
		wg.Go(func() {
			tick := time.NewTicker(2 * time.Millisecond) // pace, so publishing spans both kills
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				id := fmt.Sprintf("g%d-%d", g, i)
				for attempt := 0; ; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					err := tc.Publish(ctx, "ex", "k", Message{Body: []byte(id), MessageID: id})
					cancel()
					if err == nil {
						break
					}
					failures.Add(1)
					if attempt == 50 {
						t.Errorf("Publish(%s) failed %d times, last: %v", id, attempt+1, err)
						return
					}
				}
				confirmedMu.Lock()
				confirmed = append(confirmed, id)
				confirmedMu.Unlock()
			}
		})
	}
	waitConfirmed := func(n int) {
		t.Helper()
		testenv.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
			if got := nConfirmed(); got < n {
				return fmt.Errorf("%d messages confirmed, want %d", got, n)
			}
			return nil
		})
	}

	waitConfirmed(300)
	for kill := 1; kill <= 2; kill++ {
		testenv.RabbitCloseConnections(t, tc.vhost)
		tc.waitMetric(float64(kill), "reconnects_total")
		waitConfirmed(nConfirmed() + 300) // publishing resumed
	}
	waitConfirmed(2000)
	close(stop)
	wg.Wait()

	confirmedMu.Lock()
	ids := append([]string(nil), confirmed...)
	confirmedMu.Unlock()
	testenv.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		var missing []string
		for _, id := range ids {
			if consumed[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d confirmed messages not consumed, e.g. %v", len(missing), len(ids), missing[:min(5, len(missing))])
		}
		return nil
	})
	mu.Lock()
	dups := 0
	for _, n := range consumed {
		dups += n - 1
	}
	mu.Unlock()
	t.Logf("confirmed %d messages, %d publish failures retried, %d duplicate deliveries, %v reconnects",
		len(ids), failures.Load(), dups, tc.metric("reconnects_total"))
}

func TestPoisonDeadLettered(t *testing.T) {
	t.Parallel()
	tc := startClient(t, Topology{
		Exchanges: []Exchange{{Name: "in", Kind: "direct"}, {Name: "dlx", Kind: "topic"}},
		Queues: []Queue{
			{Name: "work", Quorum: true, DeadLetterExchange: "dlx"},
			{Name: "dead", Quorum: true},
			{Name: "nodlx"},
		},
		Bindings: []Binding{
			{Queue: "work", Exchange: "in", Key: "job"},
			{Queue: "dead", Exchange: "dlx", Key: "#"},
		},
	})
	var good, dead collector
	tc.consume("work", func(_ context.Context, d Delivery) error {
		switch string(d.Body) {
		case "malformed":
			return fmt.Errorf("decode job: %w", Poison(errors.New("unexpected end of JSON input")))
		case "panic":
			panic("nil map write")
		}
		good.add(d)
		return nil
	})
	tc.consume("dead", func(_ context.Context, d Delivery) error {
		dead.add(d)
		return nil
	})
	for _, body := range []string{"ok1", "malformed", "ok2", "panic", "ok3"} {
		m := Message{Body: []byte(body), MessageID: body, Headers: map[string]any{"clinic": "c7"}}
		if err := tc.Publish(t.Context(), "in", "job", m); err != nil {
			t.Fatalf("Publish(%s) = %v", body, err)
		}
	}
	var order []string
	for _, d := range good.waitLen(t, 3) {
		order = append(order, string(d.Body))
	}
	if got := strings.Join(order, ","); got != "ok1,ok2,ok3" {
		t.Errorf("good messages consumed = %s, want ok1,ok2,ok3", got)
	}

	ds := dead.waitLen(t, 2)
	byID := map[string]Delivery{}
	for _, d := range ds {
		byID[d.MessageID] = d
	}
	tests := []struct {
		id     string
		reason string
	}{
		{"malformed", "decode job: unexpected end of JSON input"},
		{"panic", "handler panic: nil map write"},
	}
	for _, tt := range tests {
		d, ok := byID[tt.id]
		if !ok {
			t.Errorf("message %s not in the dead-letter queue (got %v)", tt.id, ds)
			continue
		}
		if got := d.Headers[HeaderDeadReason]; got != tt.reason {
			t.Errorf("%s: %s = %v, want %q", tt.id, HeaderDeadReason, got, tt.reason)
		}
		if got := d.Headers[HeaderDeadQueue]; got != "work" {
			t.Errorf("%s: %s = %v, want work", tt.id, HeaderDeadQueue, got)
		}
		at, _ := d.Headers[HeaderDeadAt].(string)
		if ts, err := time.Parse(time.RFC3339, at); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("%s: %s = %q, want a recent RFC 3339 time", tt.id, HeaderDeadAt, at)
		}
		if d.Headers["clinic"] != "c7" || d.RoutingKey != "job" || string(d.Body) != tt.id {
			t.Errorf("%s: dead-lettered as %+v, want original body, headers and routing key", tt.id, d)
		}
	}
	if got := tc.metric("consumed_total", "result", resultPoison); got != 2 {
		t.Errorf("consumed_total{poison} = %v, want 2", got)
	}
	// The consumer survived the panic.
	if err := tc.Publish(t.Context(), "in", "job", Message{Body: []byte("ok4")}); err != nil {
		t.Fatalf("Publish(ok4) = %v", err)
	}
	good.waitLen(t, 4)

	// Without a dead-letter exchange a poison message is rejected, not requeued.
	tc.consume("nodlx", func(context.Context, Delivery) error { return Poison(errors.New("bad")) })
	if err := tc.Publish(t.Context(), "", "nodlx", Message{Body: []byte("x")}); err != nil {
		t.Fatalf("Publish(nodlx) = %v", err)
	}
	tc.waitMetric(3, "consumed_total", "result", resultPoison)
	if n, err := tc.queueLen("nodlx"); err != nil || n != 0 {
		t.Errorf("nodlx queue length = %d, %v, want 0", n, err)
	}
}

func TestPublishErrors(t *testing.T) {
	t.Parallel()
	tc := startClient(t, Topology{
		Exchanges: []Exchange{{Name: "lonely", Kind: "direct"}, {Name: "ex", Kind: "direct"}},
		Queues:    []Queue{{Name: "q"}},
		Bindings:  []Binding{{Queue: "q", Exchange: "ex", Key: "k"}},
	})
	ctx := t.Context()
	if err := tc.Publish(ctx, "lonely", "k", Message{Body: []byte("x")}); !errors.Is(err, ErrUnroutable) {
		t.Errorf("Publish(no binding) = %v, want ErrUnroutable", err)
	}

	// Routable and unroutable publishes interleaved from many goroutines are
	// each told their own outcome.
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			exchange, want := "ex", error(nil)
			if i%2 == 1 {
				exchange, want = "lonely", ErrUnroutable
			}
			if err := tc.Publish(ctx, exchange, "k", Message{Body: []byte("x")}); !errors.Is(err, want) {
				t.Errorf("Publish(%s) = %v, want %v", exchange, err, want)
			}
		})
	}
	wg.Wait()
	if got := tc.metric("publish_failures_total", "reason", reasonUnroutable); got != 101 {
		t.Errorf("publish_failures_total{unroutable} = %v, want 101", got)
	}

	// A missing exchange makes the broker close the publishing channel; the
	// next publish gets a fresh one.
	err := tc.Publish(ctx, "missing", "k", Message{Body: []byte("x")})
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "NOT_FOUND") {
		t.Errorf("Publish(missing exchange) = %v, want ErrClosed with NOT_FOUND", err)
	}
	if err := tc.Publish(ctx, "ex", "k", Message{Body: []byte("x")}); err != nil {
		t.Errorf("Publish() after a channel error = %v, want nil", err)
	}

	// A context that ends while waiting is reported as such.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := tc.Publish(cctx, "ex", "k", Message{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish(canceled ctx) = %v, want context.Canceled", err)
	}
}

// TestDeclareRedeclaredAfterReconnect checks that topology added with Declare
// is declared again on a new connection.
func TestDeclareRedeclaredAfterReconnect(t *testing.T) {
	t.Parallel()
	tc := startClient(t, Topology{})
	extra := Topology{
		Exchanges: []Exchange{{Name: "late", Kind: "fanout"}},
		Queues:    []Queue{{Name: "late-q", Quorum: true, DeliveryLimit: 3, SingleActiveConsumer: true}},
		Bindings:  []Binding{{Queue: "late-q", Exchange: "late"}},
	}
	if err := tc.Declare(t.Context(), extra); err != nil {
		t.Fatalf("Declare() = %v", err)
	}
	// A conflicting redeclaration is an error and is not remembered.
	err := tc.Declare(t.Context(), Topology{Queues: []Queue{{Name: "late-q"}}})
	if err == nil || !strings.Contains(err.Error(), "PRECONDITION_FAILED") {
		t.Errorf("Declare(conflicting queue) = %v, want PRECONDITION_FAILED", err)
	}

	conn, err := amqp.Dial(tc.url)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete("late-q", false, false, false); err != nil {
		t.Fatalf("QueueDelete() = %v", err)
	}
	_ = conn.Close()

	testenv.RabbitCloseConnections(t, tc.vhost)
	tc.waitMetric(1, "reconnects_total")
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, err := tc.queueLen("late-q")
		return err
	})
	if err := tc.Publish(t.Context(), "late", "", Message{Body: []byte("x")}); err != nil {
		t.Errorf("Publish(late) after reconnect = %v, want nil (binding re-declared)", err)
	}
}

// A Transient message goes with delivery mode 1, the default with mode 2;
// OnSubscribe runs at each subscription, the first and the one after a
// reconnect.
func TestTransientAndOnSubscribe(t *testing.T) {
	t.Parallel()
	var subscribed atomic.Int32
	tc := startClientWith(t, Topology{Queues: []Queue{{Name: "q"}, {Name: "modes"}}}, func(c *Config) {
		c.OnSubscribe = func(queue string) {
			if queue == "q" {
				subscribed.Add(1)
			}
		}
	})
	for _, transient := range []bool{true, false} {
		if err := tc.Publish(t.Context(), "", "modes", Message{Body: []byte("x"), Transient: transient}); err != nil {
			t.Fatalf("Publish(Transient: %v) = %v", transient, err)
		}
	}
	conn, err := amqp.Dial(tc.url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint8{amqp.Transient, amqp.Persistent} {
		d, ok, err := ch.Get("modes", true)
		if err != nil || !ok {
			t.Fatalf("Get(modes) = ok %v, %v", ok, err)
		}
		if d.DeliveryMode != want {
			t.Errorf("delivery mode = %d, want %d", d.DeliveryMode, want)
		}
	}

	tc.consume("q", func(context.Context, Delivery) error { return nil })
	testenv.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := subscribed.Load(); n != 1 {
			return fmt.Errorf("OnSubscribe called %d times, want 1", n)
		}
		return nil
	})
	testenv.RabbitCloseConnections(t, tc.vhost)
	testenv.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if n := subscribed.Load(); n != 2 {
			return fmt.Errorf("OnSubscribe called %d times after a reconnect, want 2", n)
		}
		return nil
	})
}
