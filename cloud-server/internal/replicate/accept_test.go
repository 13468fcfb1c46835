package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// upDelivery is a clinic's up message as the shard consumer receives it.
func upDelivery(t *testing.T, clinic ids.ID, user string, es ...wire.Envelope) amqpx.Delivery {
	t.Helper()
	return amqpx.Delivery{Body: body(t, clinic, es...), ContentType: wire.ContentType, Type: string(wire.TypeChange),
		RoutingKey: wire.UpKey(clinic), UserID: user}
}

// versions lists the clinic's feed as "record@version" in cloud_seq order,
// failing if cloud_seq is not dense from 1 or a change was a conflict.
func versions(t *testing.T, st *store.Store, clinic ids.ID) []string {
	t.Helper()
	var out []string
	for i, e := range feed(t, st, clinic).Changes {
		if e.CloudSeq != int64(i+1) {
			t.Errorf("clinic %s: change %d has cloud_seq %d, want %d", clinic, i, e.CloudSeq, i+1)
		}
		if e.Conflict != "" {
			t.Errorf("clinic %s: change %s of %d resolved as a %s conflict: its order was not kept", clinic, e.ChangeID, e.RecordID, e.Conflict)
		}
		out = append(out, fmt.Sprintf("%d@%s", e.RecordID, e.NewVersion))
	}
	return out
}

// transactions counts the PostgreSQL transactions that wrote the clinics'
// changes (rows written by one transaction share its xmin).
func transactions(t *testing.T, st *store.Store, clinics ...ids.ID) int {
	t.Helper()
	var n int
	if err := st.DB().Raw("SELECT count(DISTINCT xmin::text) FROM changes WHERE clinic_id IN ?", clinics).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// A batch of up messages of two clinics sharing a shard, with poison in the
// middle (a malformed body, another clinic's body under a key, a user-id
// not the clinic's, a change the store cannot read beside a good one),
// waiting in the shard when a node starts: every good change is accepted in
// each clinic's order (dense cloud_seq, no conflicts), each bad message or
// change is dead-lettered alone with its reason, and messages were accepted
// together (fewer transactions than messages).
func TestAcceptBatchThroughTheShard(t *testing.T) {
	t.Parallel()
	amqpURL, _ := testenv.RabbitVhost(t)
	st := openStore(t, testenv.PostgresDB(t))
	a, b := ids.ID(7_600_000_000_001), ids.ID(7_600_000_000_002)
	enroll(t, st, a)
	enroll(t, st, b)
	if err := st.SetBrokerUser(context.Background(), a, "guest"); err != nil {
		t.Fatal(err)
	}
	first := startNode(t, "cloud-1", amqpURL, st, 1)
	waitTopology(t, st, a, b)
	first.stop() // the messages wait in the shard for the next node
	<-first.done

	ctx := context.Background()
	pub := publisher(t, amqpURL)
	unreadable := edit(a, 90, 0)
	unreadable.Payload = json.RawMessage(`"not a patient"`)
	msgs := []struct {
		clinic ids.ID
		user   string
		body   []byte
	}{
		{a, "guest", body(t, a, edit(a, 1, 0))},
		{b, "", body(t, b, edit(b, 2, 0))},
		{a, "guest", []byte(`{"protocol":2,"clinic":"` + a.String() + `","changes":[`)},
		{a, "guest", body(t, a, edit(a, 1, 1))},
		{a, "guest", body(t, b, edit(b, 77, 0))}, // B's body under A's key
		{b, "", body(t, b, edit(b, 2, 1))},
		{a, "", body(t, a, edit(a, 78, 0))}, // no user-id
		{a, "guest", body(t, a, edit(a, 1, 2), unreadable)},
		{b, "", body(t, b, edit(b, 2, 2))},
		{a, "guest", body(t, a, edit(a, 1, 3))},
	}
	for _, m := range msgs {
		if err := publishUp(ctx, pub, m.clinic, m.user, m.body); err != nil {
			t.Fatal(err)
		}
	}
	startNode(t, "cloud-2", amqpURL, st, 1)
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if ha, hb := feed(t, st, a).Head, feed(t, st, b).Head; ha != 4 || hb != 3 {
			return fmt.Errorf("heads A %d B %d, want 4 and 3", ha, hb)
		}
		return nil
	})
	if got, want := fmt.Sprint(versions(t, st, a)), "[1@1.0 1@1.1 1@1.2 1@1.3]"; got != want {
		t.Errorf("clinic A's feed = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(versions(t, st, b)), "[2@1.0 2@1.1 2@1.2]"; got != want {
		t.Errorf("clinic B's feed = %s, want %s", got, want)
	}
	if n := transactions(t, st, a, b); n >= 7 {
		t.Errorf("the 7 good messages were accepted in %d transactions, want fewer (accepted together)", n)
	}
	var reasons []string
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		for _, d := range deadLetters(t, amqpURL) {
			r, _ := d.Headers[amqpx.HeaderDeadReason].(string)
			reasons = append(reasons, r)
		}
		if len(reasons) < 4 {
			return fmt.Errorf("dead letters so far: %q", reasons)
		}
		return nil
	})
	if len(reasons) != 4 {
		t.Errorf("%d dead letters, want 4: %q", len(reasons), reasons)
	}
	all := strings.Join(reasons, "\n")
	for _, want := range []string{"wire: invalid message", "arrived with the routing key of clinic " + a.String(),
		"is not clinic " + a.String() + "'s broker user", "store: invalid change"} {
		if !strings.Contains(all, want) {
			t.Errorf("no dead letter says %q; reasons:\n%s", want, all)
		}
	}
	for _, rec := range []struct {
		c  ids.ID
		id ids.ID
	}{{a, 78}, {a, 90}, {b, 77}} {
		if _, err := st.Get(ctx, rec.c, wire.KindPatient, rec.id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("record %d of clinic %s from a poison message was applied: %v", rec.id, rec.c, err)
		}
	}
}

// acceptNode is a Replicator whose batch handler a test calls directly
// (deterministic batches), with a broker for its dead letters.
func acceptNode(t *testing.T) (*Replicator, *store.Store, string) {
	t.Helper()
	amqpURL, _ := testenv.RabbitVhost(t)
	st := openStore(t, testenv.PostgresDB(t))
	b := publisher(t, amqpURL)
	if err := b.Declare(context.Background(), wire.UpShardsTopology(1)); err != nil {
		t.Fatal(err)
	}
	return New(st, b, testLog(t), nil), st, amqpURL
}

// A message that fails inside the batch's transaction (PostgreSQL refuses
// its content) does not poison the batch: the batch is accepted again one
// message at a time, that message alone is dead-lettered with the
// database's reason, and every other message is accepted in order.
func TestAcceptBatchFallsBackOneByOne(t *testing.T) {
	t.Parallel()
	r, st, _ := acceptNode(t)
	a, b := ids.ID(7_610_000_000_001), ids.ID(7_610_000_000_002)
	enroll(t, st, a)
	enroll(t, st, b)
	refused := edit(a, 5, 0)
	refused.Payload = json.RawMessage(`{"name":"nul \u0000 byte"}`)
	ds := []amqpx.Delivery{
		upDelivery(t, a, "", edit(a, 1, 0)),
		upDelivery(t, b, "", edit(b, 2, 0)),
		upDelivery(t, a, "", refused),
		upDelivery(t, a, "", edit(a, 1, 1)),
		upDelivery(t, b, "", edit(b, 2, 1)),
	}
	out := r.batchHandler(wire.UpShardQueue(0))(context.Background(), ds)
	for i, err := range out {
		if wantPoison := i == 2; amqpx.IsPoison(err) != wantPoison || (!wantPoison && err != nil) {
			t.Errorf("delivery %d: result %v, want poison %v", i, err, wantPoison)
		}
	}
	if len(out) == 5 && out[2] != nil && !strings.Contains(out[2].Error(), "SQLSTATE 22") {
		t.Errorf("the refused message's reason %q does not name the database's refusal", out[2])
	}
	if n := testutil.ToFloat64(r.fallbacks); n != 1 {
		t.Errorf("fallbacks = %v, want 1", n)
	}
	if got, want := fmt.Sprint(versions(t, st, a)), "[1@1.0 1@1.1]"; got != want {
		t.Errorf("clinic A's feed = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(versions(t, st, b)), "[2@1.0 2@1.1]"; got != want {
		t.Errorf("clinic B's feed = %s, want %s", got, want)
	}
}

// A batch whose transaction committed but whose deliveries were not all
// acked (the node died between the commit and the ack) comes again, with
// messages after it: the changes already accepted are no-ops, the new ones
// follow them in cloud_seq, and nothing is accepted twice.
func TestAcceptBatchRedelivery(t *testing.T) {
	t.Parallel()
	r, st, _ := acceptNode(t)
	a, b := ids.ID(7_620_000_000_001), ids.ID(7_620_000_000_002)
	enroll(t, st, a)
	enroll(t, st, b)
	h := r.batchHandler(wire.UpShardQueue(0))
	ctx := context.Background()
	msg := func(c, rec ids.ID, n int) amqpx.Delivery { return upDelivery(t, c, "", edit(c, rec, n)) }
	first := []amqpx.Delivery{msg(a, 1, 0), msg(b, 2, 0), msg(a, 1, 1), msg(a, 3, 0)}
	for i, err := range h(ctx, first) {
		if err != nil {
			t.Fatalf("first batch, delivery %d: %v", i, err)
		}
	}
	again := append([]amqpx.Delivery{}, first...)
	again = append(again, msg(a, 1, 2), msg(b, 2, 1), msg(a, 3, 1))
	for i := range again[:len(first)] {
		again[i].Redelivered = true
	}
	for i, err := range h(ctx, again) {
		if err != nil {
			t.Fatalf("redelivered batch, delivery %d: %v", i, err)
		}
	}
	if got, want := fmt.Sprint(versions(t, st, a)), "[1@1.0 1@1.1 3@1.0 1@1.2 3@1.1]"; got != want {
		t.Errorf("clinic A's feed = %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(versions(t, st, b)), "[2@1.0 2@1.1]"; got != want {
		t.Errorf("clinic B's feed = %s, want %s", got, want)
	}
	if n := testutil.ToFloat64(r.redeliver); n != 4 {
		t.Errorf("duplicates = %v, want the 4 redelivered changes", n)
	}
	if n := testutil.ToFloat64(r.accepted); n != 7 {
		t.Errorf("accepted = %v, want 7", n)
	}
	rec, err := st.Get(ctx, a, wire.KindPatient, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v := store.RecordMeta(rec).Version; v != (version.V{A: 1, B: 2}) {
		t.Errorf("record 1 at %s, want 1.2", v)
	}
}
