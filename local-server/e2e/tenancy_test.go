package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// brokerAttempt runs one attempt of clinic A on a fresh channel of conn and
// reports the broker's refusal (nil when the broker let it through). A
// publish is confirmed, so a refused one is seen as the channel's close.
func brokerAttempt(t *testing.T, conn *amqp.Connection, f func(ch *amqp.Channel) error) error {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	defer func() { _ = ch.Close() }()
	if err := f(ch); err != nil {
		return err
	}
	select {
	case e := <-closed:
		if e != nil {
			return e
		}
		return errors.New("channel closed")
	case <-time.After(200 * time.Millisecond):
		return nil
	}
}

// publishConfirmed publishes on ch in confirm mode and waits for the
// broker's answer: nil when it accepted the message.
func publishConfirmed(ch *amqp.Channel, exchange, key string, p amqp.Publishing) error {
	if err := ch.Confirm(false); err != nil {
		return err
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, p)
	if err != nil {
		return err
	}
	select {
	case e := <-closed:
		if e != nil {
			return e
		}
		return errors.New("channel closed")
	case <-dc.Done():
		if !dc.Acked() {
			return errors.New("nacked")
		}
		// A refusal closes the channel right after; give it the chance.
		select {
		case e := <-closed:
			if e != nil {
				return e
			}
		case <-time.After(300 * time.Millisecond):
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestBrokerTenancy (issue 14): with clinic A's own broker login, everything
// that reached another clinic's data through the broker is refused by the
// broker itself — binding to B's key or a wildcard, consuming B's queues,
// publishing up as B, with a user-id not its own, or to the down, events or
// dead-letter exchanges, reading or purging dead letters — and what the
// broker cannot refuse (a body naming B under A's key, a message without A's
// user-id) the cloud dead-letters. Both clinics keep replicating both ways.
func TestBrokerTenancy(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	a := s.enroll(t, "Clinic A")
	b := s.enroll(t, "Clinic B")
	if a.AMQP == nil || b.AMQP == nil || a.AMQP.User == b.AMQP.User {
		t.Fatalf("enrollment gave no broker identity of its own: %+v %+v", a.AMQP, b.AMQP)
	}
	s.startLocal(t, a, t.TempDir())
	s.startLocal(t, b, t.TempDir())

	conn, err := amqp.Dial(clinicAMQP(t, a, s.amqpURL))
	if err != nil {
		t.Fatalf("A's login: %v", err)
	}
	defer conn.Close()
	refused := func(name string, f func(ch *amqp.Channel) error) {
		t.Helper()
		err := brokerAttempt(t, conn, f)
		var ae *amqp.Error
		if err == nil {
			t.Errorf("%s: the broker allowed it", name)
			return
		}
		if errors.As(err, &ae) && ae.Code != amqp.AccessRefused && ae.Code != amqp.PreconditionFailed {
			t.Errorf("%s: refused with %v, want access refused", name, err)
		}
	}
	up, down, events, eventsUp, dead := "scsync.up", "scsync.down", "scsync.events", "scsync.events.up", "scsync.dead"
	keyB := "clinic." + b.ID
	aDown := "scsync.down." + a.ID // its one queue: the cloud's changes and events for it
	for _, q := range []string{aDown} {
		for _, bind := range []struct{ ex, key string }{
			{up, keyB}, {up, "clinic.#"}, {up, "#"}, {down, keyB}, {down, "clinic.*"},
			{events, keyB + ".#"}, {events, "#"}, {eventsUp, "clinic.#"}, {dead, "#"},
		} {
			refused(fmt.Sprintf("bind %s to %s with %q", q, bind.ex, bind.key), func(ch *amqp.Channel) error {
				return ch.QueueBind(q, bind.key, bind.ex, false, nil)
			})
		}
	}
	refused("declare a queue of its own", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare("", false, true, true, false, nil)
		return err
	})
	refused("declare an exchange", func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare("evil", "fanout", false, true, false, false, nil)
	})
	refused("delete its own down queue", func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(aDown, false, false, false)
		return err
	})
	// The up shard queues carry many clinics' changes: no clinic may read
	// them, B's shard nor A's own (the stack runs the default shards).
	shardOf := func(c *clinic) string {
		id, err := ids.Parse(c.ID)
		if err != nil {
			t.Fatal(err)
		}
		return wire.UpShardQueue(wire.Shard(id, wire.DefaultUpShards))
	}
	for _, q := range []string{"scsync.down." + b.ID, dead, shardOf(b), shardOf(a)} {
		refused("consume "+q, func(ch *amqp.Channel) error {
			_, err := ch.Consume(q, "", false, false, false, false, nil)
			return err
		})
		refused("get from "+q, func(ch *amqp.Channel) error {
			_, _, err := ch.Get(q, false)
			return err
		})
		refused("purge "+q, func(ch *amqp.Channel) error {
			_, err := ch.QueuePurge(q, false)
			return err
		})
	}
	msg := func(user string) amqp.Publishing {
		return amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, UserId: user, Body: []byte(`{}`)}
	}
	for _, p := range []struct{ name, ex, key, user string }{
		{"publish up with B's key", up, keyB, a.AMQP.User},
		{"publish up with a wildcard-looking key", up, "clinic.#", a.AMQP.User},
		{"publish up with B's user-id", up, "clinic." + a.ID, b.AMQP.User},
		{"publish up with the cloud's user-id", up, "clinic." + a.ID, "guest"},
		{"publish down to A", down, "clinic." + a.ID, a.AMQP.User},
		{"publish down to B", down, keyB, a.AMQP.User},
		{"publish an event", events, "clinic." + a.ID + ".patient.1", a.AMQP.User},
		{"publish an event of B up", eventsUp, keyB + ".patient.1", a.AMQP.User},
		{"publish a dead letter", dead, "clinic." + a.ID, a.AMQP.User},
		{"publish to B's down queue by the default exchange", "", "scsync.down." + b.ID, a.AMQP.User},
		{"publish to B's up shard queue by the default exchange", "", shardOf(b), a.AMQP.User},
	} {
		refused(p.name, func(ch *amqp.Channel) error { return publishConfirmed(ch, p.ex, p.key, msg(p.user)) })
	}

	// What the broker lets through, the cloud refuses: a batch naming B
	// under A's key, and a change of A without A's user-id.
	change := func(clinic, changeID, recordID, name string) []byte {
		return fmt.Appendf(nil, `{"protocol":2,"clinic":"%[1]s","changes":[{"protocol":2,"type":"change","clinic":"%[1]s","origin":"local","change_id":"%[2]s","kind":"patient","record_id":"%[3]s","base_version":"0.0","new_version":"1.0","at":"2026-11-22T00:00:00Z","payload":{"name":"%[4]s"}}]}`,
			clinic, changeID, recordID, name)
	}
	for _, p := range []struct {
		name, user string
		body       []byte
	}{
		{"a batch of B under A's key", a.AMQP.User, change(b.ID, "11", "12", "forged into B")},
		{"A's change without a user-id", "", change(a.ID, "13", "14", "no user-id")},
	} {
		err := brokerAttempt(t, conn, func(ch *amqp.Channel) error {
			return publishConfirmed(ch, up, "clinic."+a.ID, amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, UserId: p.user, Body: p.body})
		})
		if err != nil {
			t.Fatalf("%s: the broker refused a publish it should carry: %v", p.name, err)
		}
	}
	// Both land in the dead-letter queue, which the operator reads.
	op, err := amqp.Dial(s.amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	och, err := op.Channel()
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		d, ok, err := och.Get(dead, true)
		if err != nil {
			return err
		}
		if ok {
			r, _ := d.Headers["x-scsync-dead-reason"].(string)
			reasons[r] = true
		}
		var foreign, noUser bool
		for r := range reasons {
			foreign = foreign || strings.Contains(r, "arrived with the routing key of clinic "+a.ID)
			noUser = noUser || strings.Contains(r, "is not clinic "+a.ID+"'s broker user")
		}
		if !foreign || !noUser {
			return fmt.Errorf("dead letters so far: %v", reasons)
		}
		return nil
	})
	for _, c := range []struct {
		clinic *clinic
		id     string
	}{{b, "12"}, {a, "14"}} {
		if code := call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.clinic.ID+"/patients/"+c.id, c.clinic.person, nil, nil); code != 404 {
			t.Errorf("refused change reached clinic %s: GET = %d", c.clinic.ID, code)
		}
	}

	// Meanwhile both clinics replicate both ways.
	for _, c := range []*clinic{a, b} {
		var p patient
		if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Made in " + c.ID}), &p); code != 201 {
			t.Fatalf("create in clinic: %d", code)
		}
		var q patient
		if code := call(t, "POST", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients", c.person, save("", map[string]string{"name": "Made in the cloud"}), &q); code != 201 {
			t.Fatalf("create in cloud: %d", code)
		}
		testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
			var up, down patient
			if code := call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/"+p.ID, c.person, nil, &up); code != 200 {
				return fmt.Errorf("clinic's patient in the cloud: %d", code)
			}
			if code := call(t, "GET", c.base+"/v1/patients/"+q.ID, "", nil, &down); code != 200 {
				return fmt.Errorf("cloud's patient in the clinic: %d", code)
			}
			if code := call(t, "GET", c.base+"/v1/patients/"+p.ID, "", nil, &up); code != 200 || up.SyncState != "synced" {
				return fmt.Errorf("clinic's patient not synced yet: %d %s", code, up.SyncState)
			}
			return nil
		})
	}
}
