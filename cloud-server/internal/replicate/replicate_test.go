package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

type seqIDs struct{ n atomic.Int64 }

func (s *seqIDs) Next() (ids.ID, error) { return ids.ID(9_000_000 + s.n.Add(1)), nil }

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() && os.Getenv("SCSYNC_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func openStore(t *testing.T, pgURL string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), pgURL, &seqIDs{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// node is one cloud node's replication: its own AMQP connection (through
// amqpURL) and store.
type node struct {
	rep    *Replicator
	broker *amqpx.Client
	stop   context.CancelFunc
	done   chan struct{}
}

func startNode(t *testing.T, name, amqpURL string, st *store.Store, shards int) *node {
	t.Helper()
	log := testLog(t).With("node", name)
	b, err := amqpx.New(amqpx.Config{URL: amqpURL, ConnectionName: name, ReconnectMax: time.Second}, wire.BaseTopology(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := New(st, b, log, nil)
	r.SetShards(shards)
	r.refresh = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{rep: r, broker: b, stop: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = b.Run(ctx) }()
	go func() { defer wg.Done(); _ = r.Run(ctx) }()
	go func() { wg.Wait(); close(n.done) }()
	t.Cleanup(func() { cancel(); <-n.done })
	return n
}

// publisher is a clinic's AMQP client.
func publisher(t *testing.T, amqpURL string) *amqpx.Client {
	t.Helper()
	c, err := amqpx.New(amqpx.Config{URL: amqpURL, ConnectionName: "clinic"}, amqpx.Topology{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func enroll(t *testing.T, st *store.Store, id ids.ID) {
	t.Helper()
	if _, _, err := st.CreateClinic(context.Background(), id, fmt.Sprintf("clinic %d", id), store.PolicyLocalWins); err != nil {
		t.Fatal(err)
	}
}

// edit is the n-th change of a chain on one patient: n = 0 creates it
// (1.0), each next one saves over the last (1.1, 1.2, …).
func edit(clinic, record ids.ID, n int) wire.Envelope {
	b, _ := json.Marshal(records.Patient{Name: fmt.Sprintf("version %d", n)})
	base, next := version.V{}, version.First
	if n > 0 {
		base, next = version.V{A: 1, B: uint32(n - 1)}, version.V{A: 1, B: uint32(n)}
	}
	return wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: clinic, Origin: wire.OriginLocal,
		ChangeID: ids.ID(int64(record)*1000 + int64(n) + 1), Kind: wire.KindPatient, RecordID: record,
		BaseVersion: base, NewVersion: next, At: time.Now().UTC(), Payload: b}
}

func body(t *testing.T, clinic ids.ID, es ...wire.Envelope) []byte {
	t.Helper()
	b, err := json.Marshal(wire.NewBatch(clinic, es...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func publishUp(ctx context.Context, c *amqpx.Client, clinic ids.ID, user string, body []byte) error {
	return c.Publish(ctx, wire.UpExchange, wire.UpKey(clinic), amqpx.Message{Body: body, ContentType: wire.ContentType,
		Type: string(wire.TypeChange), UserID: user})
}

// head is the clinic's cloud_seq head and its feed.
func feed(t *testing.T, st *store.Store, clinic ids.ID) wire.ChangesPage {
	t.Helper()
	p, err := st.ChangesSince(context.Background(), clinic, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitTopology(t *testing.T, st *store.Store, clinics ...ids.ID) {
	t.Helper()
	testenv.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		cs, err := st.ClinicStates(context.Background())
		if err != nil {
			return err
		}
		done := map[ids.ID]bool{}
		for _, c := range cs {
			done[c.ID] = c.Topology == TopologyVersion
		}
		for _, c := range clinics {
			if !done[c] {
				return fmt.Errorf("clinic %s not set up yet", c)
			}
		}
		return nil
	})
}

// sameShard returns two clinic ids whose up keys hash to the same shard.
func sameShard(shards int) (a, b ids.ID) {
	a = ids.ID(7_300_000_000_001)
	for b = a + 1; wire.Shard(b, shards) != wire.Shard(a, shards); b++ {
	}
	return a, b
}

// deadLetters takes every message of the dead-letter queue.
func deadLetters(t *testing.T, amqpURL string) []amqp.Delivery {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var out []amqp.Delivery
	for {
		d, ok, err := ch.Get(wire.DeadQueue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

// Two clinics whose ids hash to the same up shard both replicate, and one's
// poison messages (malformed, another clinic's body, a user-id not its own)
// are dead-lettered without holding up the other clinic's changes behind it
// in the shard.
func TestSharedShardPoisonDoesNotBlock(t *testing.T) {
	t.Parallel()
	amqpURL, _ := testenv.RabbitVhost(t)
	st := openStore(t, testenv.PostgresDB(t))
	const shards = 4
	a, b := sameShard(shards)
	enroll(t, st, a)
	enroll(t, st, b)
	// A has its own broker identity (the test's login stands for it); B
	// was enrolled before identities existed.
	if err := st.SetBrokerUser(context.Background(), a, "guest"); err != nil {
		t.Fatal(err)
	}
	startNode(t, "cloud-1", amqpURL, st, shards)
	waitTopology(t, st, a, b)

	ctx := context.Background()
	pub := publisher(t, amqpURL)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*n+3)
	wg.Add(2)
	go func() { // A: a poison first, then every few changes another
		defer wg.Done()
		errs <- publishUp(ctx, pub, a, "guest", []byte(`{"protocol":2,"clinic":"`+a.String()+`","changes":[`))
		for i := range n {
			errs <- publishUp(ctx, pub, a, "guest", body(t, a, edit(a, 1, i)))
			switch i {
			case 5:
				errs <- publishUp(ctx, pub, a, "guest", body(t, b, edit(b, 77, 0))) // B's body under A's key
			case 10:
				errs <- publishUp(ctx, pub, a, "", body(t, a, edit(a, 78, 0))) // no user-id
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			errs <- publishUp(ctx, pub, b, "", body(t, b, edit(b, 2, i)))
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, c := range []ids.ID{a, b} {
			if h := feed(t, st, c).Head; h != n {
				return fmt.Errorf("clinic %s head %d, want %d", c, h, n)
			}
		}
		return nil
	})
	for _, c := range []ids.ID{a, b} {
		for _, e := range feed(t, st, c).Changes {
			if e.Conflict != "" {
				t.Errorf("clinic %s change %s resolved as a conflict: the shard reordered the clinic's changes", c, e.ChangeID)
			}
		}
	}
	if _, err := st.Get(ctx, b, wire.KindPatient, 77); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("B's body published under A's key reached B: %v", err)
	}
	shard := wire.UpShardQueue(wire.Shard(a, shards))
	var reasons []string
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		for _, d := range deadLetters(t, amqpURL) {
			if q := d.Headers[amqpx.HeaderDeadQueue]; q != shard {
				t.Errorf("dead letter from %v, want %s", q, shard)
			}
			r, _ := d.Headers[amqpx.HeaderDeadReason].(string)
			reasons = append(reasons, r)
		}
		if len(reasons) < 3 {
			return fmt.Errorf("dead letters so far: %q", reasons)
		}
		return nil
	})
	all := strings.Join(reasons, "\n")
	for _, want := range []string{"wire: invalid message", "arrived with the routing key of clinic " + a.String(), "is not clinic " + a.String() + "'s broker user"} {
		if !strings.Contains(all, want) {
			t.Errorf("no dead letter says %q; reasons:\n%s", want, all)
		}
	}
}

// viaProxy returns amqpURL through a TCP proxy the test can cut.
func viaProxy(t *testing.T, amqpURL string) (string, *testenv.Proxy) {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewProxy(t, u.Host)
	u.Host = p.Addr()
	return u.String(), p
}

// consumers counts each shard's consumers, active or waiting, from the
// management API (a passive declare counts only the active one).
func consumers(t *testing.T, vhost string, shards int) []int {
	t.Helper()
	mgmt, user, pass, _ := testenv.RabbitManagement(t)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, mgmt+"/api/consumers/"+url.PathEscape(vhost), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cs []struct {
		Queue struct {
			Name string `json:"name"`
		} `json:"queue"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&cs); err != nil {
		t.Fatal(err)
	}
	out := make([]int, shards)
	for _, c := range cs {
		for k := range shards {
			if c.Queue.Name == wire.UpShardQueue(k) {
				out[k]++
			}
		}
	}
	return out
}

// A cloud node that dies (its connection cut, as a kill or a network loss
// does) hands every up shard to the other node's waiting consumers at once:
// a clinic's changes keep being accepted within seconds.
func TestShardTakeover(t *testing.T) {
	t.Parallel()
	amqpURL, vhost := testenv.RabbitVhost(t)
	pgURL := testenv.PostgresDB(t)
	st1, st2 := openStore(t, pgURL), openStore(t, pgURL)
	const shards = 4
	var clinics []ids.ID
	for i := range 8 {
		c := ids.ID(7_400_000_000_000 + int64(i)*7919)
		enroll(t, st1, c)
		clinics = append(clinics, c)
	}
	viaURL, link := viaProxy(t, amqpURL)
	startNode(t, "cloud-1", viaURL, st1, shards)
	waitTopology(t, st1, clinics...)
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for k, n := range consumers(t, vhost, shards) {
			if n != 1 {
				return fmt.Errorf("shard %d has %d consumers", k, n)
			}
		}
		return nil
	})
	startNode(t, "cloud-2", amqpURL, st2, shards)
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for k, n := range consumers(t, vhost, shards) {
			if n != 2 {
				return fmt.Errorf("shard %d has %d consumers", k, n)
			}
		}
		return nil
	})
	ctx := context.Background()
	pub := publisher(t, amqpURL)
	for _, c := range clinics {
		if err := publishUp(ctx, pub, c, "", body(t, c, edit(c, 1, 0))); err != nil {
			t.Fatal(err)
		}
	}
	testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		for _, c := range clinics {
			if h := feed(t, st1, c).Head; h != 1 {
				return fmt.Errorf("clinic %s head %d", c, h)
			}
		}
		return nil
	})

	link.Cut() // the first node is gone, and cannot come back
	start := time.Now()
	for _, c := range clinics {
		if err := publishUp(ctx, pub, c, "", body(t, c, edit(c, 1, 1))); err != nil {
			t.Fatal(err)
		}
	}
	testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		for _, c := range clinics {
			if h := feed(t, st2, c).Head; h != 2 {
				return fmt.Errorf("clinic %s head %d", c, h)
			}
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("every clinic's change accepted %v after the first node's link was cut", took)
	if took > 10*time.Second {
		t.Errorf("takeover took %v, want well under 10 s", took)
	}
	for k, n := range consumers(t, vhost, shards) {
		if n != 1 {
			t.Errorf("shard %d has %d consumers after the cut, want the second node's alone", k, n)
		}
	}
}

// legacyTopology is what versions before up shards declared for a clinic:
// a quorum up queue and a quorum down queue of its own, both bound.
func legacyTopology(c ids.ID) amqpx.Topology {
	q := func(name string) amqpx.Queue {
		return amqpx.Queue{Name: name, Quorum: true, SingleActiveConsumer: true, DeadLetterExchange: wire.DeadExchange, DeliveryLimit: 50}
	}
	return amqpx.Topology{
		Queues: []amqpx.Queue{q(wire.UpQueue(c)), q(wire.DownQueue(c))},
		Bindings: []amqpx.Binding{
			{Queue: wire.UpQueue(c), Exchange: wire.UpExchange, Key: wire.UpKey(c)},
			{Queue: wire.DownQueue(c), Exchange: wire.DownExchange, Key: wire.DownKey(c)},
		},
	}
}

// Clinics enrolled on the per-clinic quorum queues of earlier versions, with
// changes waiting in their up queues and messages in their down queues, are
// migrated by the new nodes (two at once): every waiting change is applied,
// in order, together with the changes the clinic keeps sending meanwhile; a
// poison message among them is dead-lettered; the legacy up queue is gone
// and the down queue is a classic one the relay delivers to.
func TestMigrateLegacyTopology(t *testing.T) {
	t.Parallel()
	amqpURL, _ := testenv.RabbitVhost(t)
	pgURL := testenv.PostgresDB(t)
	st := openStore(t, pgURL)
	ctx := context.Background()
	a, b := ids.ID(7_500_000_000_001), ids.ID(7_500_000_000_002)
	for _, c := range []ids.ID{a, b} {
		enroll(t, st, c)
	}
	pub := publisher(t, amqpURL)
	if err := pub.DeclareOnce(ctx, wire.BaseTopology()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []ids.ID{a, b} {
		if err := pub.DeclareOnce(ctx, legacyTopology(c)); err != nil {
			t.Fatal(err)
		}
	}
	// And the event queue of its own a clinic had for a while.
	if err := pub.DeclareOnce(ctx, amqpx.Topology{Queues: []amqpx.Queue{{Name: events.LegacyClinicQueue(a)}}}); err != nil {
		t.Fatal(err)
	}
	// Waiting in the legacy up queues: A's chain of 20 saves on one record
	// with a poison message in the middle, B's 5 creations.
	const waiting, later = 20, 10
	for i := range waiting {
		if err := publishUp(ctx, pub, a, "", body(t, a, edit(a, 1, i))); err != nil {
			t.Fatal(err)
		}
		if i == waiting/2 {
			if err := publishUp(ctx, pub, a, "", []byte("not json")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 5 {
		if err := publishUp(ctx, pub, b, "", body(t, b, edit(b, ids.ID(10+i), 0))); err != nil {
			t.Fatal(err)
		}
	}
	// And in A's legacy down queue, changes the clinic has not fetched.
	for range 3 {
		if err := pub.Publish(ctx, wire.DownExchange, wire.DownKey(a), amqpx.Message{Body: []byte(`{}`), ContentType: wire.ContentType}); err != nil {
			t.Fatal(err)
		}
	}

	startNode(t, "cloud-1", amqpURL, st, 4)
	// The clinic keeps saving while the nodes migrate: each publish after
	// the last was confirmed, retried when it bounced (as sc-local does).
	sent := make(chan error, 1)
	var bounced atomic.Int64
	go func() {
		for i := waiting; i < waiting+later; i++ {
			for {
				err := publishUp(ctx, pub, a, "", body(t, a, edit(a, 1, i)))
				if err == nil {
					break
				}
				if !errors.Is(err, amqpx.ErrUnroutable) {
					sent <- err
					return
				}
				bounced.Add(1)
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(150 * time.Millisecond)
		}
		sent <- nil
	}()
	startNode(t, "cloud-2", amqpURL, openStore(t, pgURL), 4)
	waitTopology(t, st, a, b)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	t.Logf("publishes that bounced while A's legacy queue was drained: %d", bounced.Load())
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if h := feed(t, st, a).Head; h != waiting+later {
			return fmt.Errorf("clinic A head %d, want %d", h, waiting+later)
		}
		if h := feed(t, st, b).Head; h != 5 {
			return fmt.Errorf("clinic B head %d, want 5", h)
		}
		return nil
	})
	for i, e := range feed(t, st, a).Changes {
		if want := edit(a, 1, i).ChangeID; e.ChangeID != want || e.Conflict != "" {
			t.Errorf("A's change %d: %s (conflict %q), want %s in order and without conflict", i, e.ChangeID, e.Conflict, want)
		}
	}
	r, err := st.Get(ctx, a, wire.KindPatient, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v := store.RecordMeta(r).Version; v != (version.V{A: 1, B: waiting + later - 1}) {
		t.Errorf("A's record at %s, want 1.%d", v, waiting+later-1)
	}
	for _, c := range []ids.ID{a, b} {
		if _, ok, err := pub.Inspect(ctx, wire.UpQueue(c)); err != nil || ok {
			t.Errorf("legacy up queue of %s still there (%v, %v)", c, ok, err)
		}
		// Declaring the classic down queue succeeds only if it is one.
		if err := pub.DeclareOnce(ctx, amqpx.Topology{Queues: []amqpx.Queue{wire.DownQueueSpec(c)}}); err != nil {
			t.Errorf("down queue of %s is not the classic one: %v", c, err)
		}
		// The cloud's events for the clinic reach its down queue.
		if err := pub.Publish(ctx, events.Exchange, events.RoutingKey(c, "patient", 1), amqpx.Message{Body: []byte(`{}`), Type: events.MessageType}); err != nil {
			t.Errorf("an event for %s: %v", c, err)
		}
	}
	if _, ok, err := pub.Inspect(ctx, events.LegacyClinicQueue(a)); err != nil || ok {
		t.Errorf("A's event queue of its own still there (%v, %v)", ok, err)
	}
	dead := deadLetters(t, amqpURL)
	if len(dead) != 1 || dead[0].Headers[amqpx.HeaderDeadQueue] != wire.UpQueue(a) {
		t.Errorf("dead letters %d, want the one poison message from %s", len(dead), wire.UpQueue(a))
	}
	// After the migration both clinics replicate through their shards.
	for _, c := range []ids.ID{a, b} {
		if err := publishUp(ctx, pub, c, "", body(t, c, edit(c, 99, 0))); err != nil {
			t.Fatal(err)
		}
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, c := range []ids.ID{a, b} {
			if _, err := st.Get(ctx, c, wire.KindPatient, 99); err != nil {
				return fmt.Errorf("clinic %s: %w", c, err)
			}
		}
		return nil
	})
	// The relay delivers A's accepted changes to its new down queue (the
	// legacy messages went with the old queue: the clinic pulls them).
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		q, _, err := pub.Inspect(ctx, wire.DownQueue(a))
		if err != nil {
			return err
		}
		if q.Messages == 0 {
			return errors.New("nothing relayed to A's down queue yet")
		}
		return nil
	})
}

// TestMigrationScale measures the migration of a deployment of N clinics
// (SCSYNC_MIGRATION_SCALE=N) on the per-clinic quorum queues of earlier
// versions, on a private broker configured as deployments/rabbitmq does,
// by two nodes: how long until every clinic is routed through its shard,
// until every legacy queue is gone, and how long the broker took to accept
// a connection meanwhile. A measuring tool for docs/protocol.md; it runs only
// when asked.
func TestMigrationScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SCSYNC_MIGRATION_SCALE"))
	if n <= 0 {
		t.Skip("set SCSYNC_MIGRATION_SCALE=<clinics> to measure a migration")
	}
	rabbit := testenv.StartPrivateRabbitManagedConf(t, "management_agent.disable_metrics_collector = true")
	pgURL := testenv.PostgresDB(t)
	st := openStore(t, pgURL)
	ctx := context.Background()
	pub := publisher(t, rabbit.URL)
	if err := pub.DeclareOnce(ctx, wire.BaseTopology()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	clinics := make([]ids.ID, n)
	for i := range clinics {
		clinics[i] = ids.ID(8_000_000_000_000 + int64(i)*7919)
		enroll(t, st, clinics[i])
		if err := pub.DeclareOnce(ctx, legacyTopology(clinics[i])); err != nil {
			t.Fatal(err)
		}
	}
	// A few clinics have changes waiting.
	for _, c := range clinics[:min(n, 20)] {
		for i := range 5 {
			if err := publishUp(ctx, pub, c, "", body(t, c, edit(c, 1, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("legacy topology of %d clinics created in %v", n, time.Since(start))

	var slowest atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			t0 := time.Now()
			conn, err := amqp.DialConfig(rabbit.URL, amqp.Config{Dial: amqp.DefaultDial(60 * time.Second)})
			if err == nil {
				_ = conn.Close()
			}
			if d := time.Since(t0); int64(d) > slowest.Load() {
				slowest.Store(int64(d))
			}
		}
	}()
	start = time.Now()
	startNode(t, "cloud-1", rabbit.URL, st, wire.DefaultUpShards)
	startNode(t, "cloud-2", rabbit.URL, openStore(t, pgURL), wire.DefaultUpShards)
	at := func(v int) func() error {
		return func() error {
			cs, err := st.ClinicStates(ctx)
			if err != nil {
				return err
			}
			left := 0
			for _, c := range cs {
				if c.Topology < v {
					left++
				}
			}
			if left > 0 {
				return fmt.Errorf("%d clinics below topology %d", left, v)
			}
			return nil
		}
	}
	testenv.CheckFor(t, time.Hour, time.Second, at(TopologyRouted))
	routed := time.Since(start)
	testenv.CheckFor(t, time.Hour, time.Second, at(TopologyVersion))
	t.Logf("%d clinics: all routed through their shards after %v, all legacy queues gone after %v; slowest connection to the broker meanwhile %v",
		n, routed, time.Since(start), time.Duration(slowest.Load()))
	for _, c := range clinics[:min(n, 20)] {
		if h := feed(t, st, c).Head; h != 5 {
			t.Errorf("clinic %s head %d, want the 5 waiting changes", c, h)
		}
	}
}
