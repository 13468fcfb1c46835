package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// legacyQueue declares a per-clinic quorum queue as versions before up
// shards did (single active consumer, dead-lettering, delivery limit) and
// binds it.
func legacyQueue(t *testing.T, ch *amqp.Channel, name, exchange, key string) {
	t.Helper()
	if _, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{
		"x-queue-type": "quorum", "x-single-active-consumer": true,
		"x-dead-letter-exchange": "scsync.dead", "x-delivery-limit": 50,
	}); err != nil {
		t.Fatalf("declare legacy %s: %v", name, err)
	}
	if err := ch.QueueBind(name, key, exchange, false, nil); err != nil {
		t.Fatalf("bind legacy %s: %v", name, err)
	}
}

// TestLegacyTopologyMigrates (issue 14): a clinic enrolled on the
// per-clinic quorum queues of earlier versions, with changes of the clinic
// waiting in its legacy up queue (saves of one patient in a row among
// them) and a cloud change waiting in its legacy down queue, is migrated by
// a cloud node of this version: every waiting change is accepted, in order;
// the legacy up queue is gone and the down queue is a classic one; the
// change lost with the old down queue reaches the clinic through the pull
// API; and the clinic keeps replicating both ways.
func TestLegacyTopologyMigrates(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Legacy Clinic")
	s.startLocal(t, c, t.TempDir())
	cloud := cloudSide(s.cloud[0], c)
	id, err := ids.Parse(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The operator's channel: a new connection each time (the test runs
	// for a while, across a cloud restart).
	operator := func() *amqp.Channel {
		t.Helper()
		conn, err := amqp.Dial(s.amqpURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	ch := operator()
	upQ, downQ, key := "scsync.up."+c.ID, "scsync.down."+c.ID, "clinic."+c.ID

	// The clinic's up key routes to a per-clinic up queue of its own, as
	// before up shards, which this cloud node does not consume: the
	// clinic's changes wait there.
	if err := ch.QueueUnbind(wire.UpShardQueue(wire.Shard(id, wire.DefaultUpShards)), key, "scsync.up", nil); err != nil {
		t.Fatal(err)
	}
	legacyQueue(t, ch, upQ, "scsync.up", key)
	var first patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Saved five times"}), &first); code != 201 {
		t.Fatalf("create: %d", code)
	}
	version := first.Version
	for i := range 4 {
		var p patient
		if code := call(t, "PUT", c.base+"/v1/patients/"+first.ID, "", save(version, map[string]string{"name": fmt.Sprintf("Save %d", i+2)}), &p); code != 200 {
			t.Fatalf("edit %d: %d", i, code)
		}
		version = p.Version
	}
	var made []string
	for i := range 5 {
		var p patient
		if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": fmt.Sprintf("Waiting %d", i)}), &p); code != 201 {
			t.Fatalf("create %d: %d", i, code)
		}
		made = append(made, p.ID)
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		var st localStatus
		call(t, "GET", c.base+"/v1/status", "", nil, &st)
		q, err := ch.QueueDeclarePassive(upQ, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Outbox != 0 || q.Messages == 0 {
			return fmt.Errorf("clinic outbox %d, legacy up queue %d messages", st.Outbox, q.Messages)
		}
		return nil
	})

	// A cloud change waits in the clinic's down queue while the clinic is
	// stopped; the cloud node stops, and the down queue becomes a legacy
	// quorum one holding that message.
	c.proc.stop(t)
	var fromCloud patient
	if code := call(t, "POST", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients", c.person, save("", map[string]string{"name": "Made in the cloud"}), &fromCloud); code != 201 {
		t.Fatalf("cloud create: %d", code)
	}
	var held amqp.Delivery
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		d, ok, err := ch.Get(downQ, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return fmt.Errorf("nothing relayed to %s yet", downQ)
		}
		held = d
		return nil
	})
	s.nodes[0].stop(t)
	ch = operator()
	if _, err := ch.QueueDelete(downQ, false, false, false); err != nil {
		t.Fatal(err)
	}
	legacyQueue(t, ch, downQ, "scsync.down", key)
	if err := ch.PublishWithContext(context.Background(), "scsync.down", key, true, false, amqp.Publishing{
		ContentType: held.ContentType, ContentEncoding: held.ContentEncoding, DeliveryMode: amqp.Persistent, Body: held.Body,
	}); err != nil {
		t.Fatal(err)
	}
	pg, err := pgx.Connect(context.Background(), s.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(context.Background())
	if _, err := pg.Exec(context.Background(), "UPDATE clinics SET topology = 0 WHERE id = $1", int64(id)); err != nil {
		t.Fatal(err)
	}

	// This version's node starts and migrates the clinic; then the clinic.
	s.nodes[0].restart(t)
	waitReady(t, s.nodes[0], s.cloud[0])
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		var topo int
		if err := pg.QueryRow(context.Background(), "SELECT topology FROM clinics WHERE id = $1", int64(id)).Scan(&topo); err != nil {
			t.Fatal(err)
		}
		if topo < 2 {
			return fmt.Errorf("clinic topology %d", topo)
		}
		return nil
	})
	c.proc.restart(t)
	waitReady(t, c.proc, c.base)

	// Every waiting change was accepted, the saves in order.
	var p patient
	if code := call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/"+first.ID, c.person, nil, &p); code != 200 || p.Version != version || p.Data.Name != "Save 5" {
		t.Errorf("the saved-five-times patient in the cloud: %d %s %q, want %s \"Save 5\"", code, p.Version, p.Data.Name, version)
	}
	for _, pid := range made {
		if code := call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/"+pid, c.person, nil, nil); code != 200 {
			t.Errorf("patient %s waiting in the legacy queue: cloud GET %d", pid, code)
		}
	}
	// The legacy up queue is gone; the down queue is the classic one.
	if _, err := operator().QueueDeclarePassive(upQ, true, false, false, false, nil); err == nil {
		t.Errorf("legacy up queue %s still exists", upQ)
	}
	if _, err := operator().QueueDeclare(downQ, true, false, false, false, amqp.Table{
		"x-queue-type": "classic", "x-queue-version": int32(2), "x-max-length": int32(10000), "x-overflow": "drop-head",
	}); err != nil {
		t.Errorf("down queue is not this version's classic queue: %v", err)
	}
	// The cloud change held by the deleted legacy down queue comes by pull.
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		if code := call(t, "GET", c.base+"/v1/patients/"+fromCloud.ID, "", nil, nil); code != 200 {
			return fmt.Errorf("cloud's patient in the clinic: %d", code)
		}
		return nil
	})
	// And the clinic replicates both ways on the new topology.
	var after, cloudAfter patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "After the migration"}), &after); code != 201 {
		t.Fatalf("create after: %d", code)
	}
	if code := call(t, "POST", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients", c.person, save("", map[string]string{"name": "Cloud, after"}), &cloudAfter); code != 201 {
		t.Fatalf("cloud create after: %d", code)
	}
	d := converged(t, c, cloud, 60*time.Second)
	if want := 1 + 5 + 1 + 2; d.Count != want { // saved five times, waiting, cloud's, after
		t.Errorf("%d records after convergence, want %d", d.Count, want)
	}
	var head struct {
		Head int64 `json:"head"`
	}
	call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/changes?limit=1", c.Token, nil, &head)
	// 1 create + 4 saves + 5 creates + the cloud's + 2 after.
	if head.Head != 13 {
		t.Errorf("cloud_seq head %d, want 13: a change was lost or accepted twice", head.Head)
	}
}
