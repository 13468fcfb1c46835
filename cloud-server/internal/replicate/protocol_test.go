package replicate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// TestDownProtocolPerClinic: the cloud records the protocol range each
// clinic states on its up messages (none: a release before ranges), sends
// a clinic that stated none protocol 2 envelopes its strict decoder
// accepts, and sends nothing to a clinic that speaks no version in common
// (its changes stay in the change log).
func TestDownProtocolPerClinic(t *testing.T) {
	t.Parallel()
	amqpURL, _ := testenv.RabbitVhost(t)
	st := openStore(t, testenv.PostgresDB(t))
	legacy, stating, future := ids.ID(7_400_000_000_001), ids.ID(7_400_000_000_002), ids.ID(7_400_000_000_003)
	for _, c := range []ids.ID{legacy, stating, future} {
		enroll(t, st, c)
	}
	n := startNode(t, "n1", amqpURL, st, 2)
	waitTopology(t, st, legacy, stating, future)
	pub := publisher(t, amqpURL)
	ctx := context.Background()
	send := func(clinic ids.ID, h map[string]any) {
		t.Helper()
		err := pub.Publish(ctx, wire.UpExchange, wire.UpKey(clinic), amqpx.Message{Body: body(t, clinic, edit(clinic, clinic+100, 0)),
			ContentType: wire.ContentType, Type: string(wire.TypeChange), Headers: h})
		if err != nil {
			t.Fatal(err)
		}
	}
	send(legacy, nil)
	send(stating, wire.Range{Min: 2, Max: 2}.Headers())
	send(future, wire.Range{Min: 3, Max: 4}.Headers())
	for _, c := range []ids.ID{legacy, stating, future} {
		testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			if p := feed(t, st, c); len(p.Changes) != 1 {
				return fmt.Errorf("clinic %s: %d changes accepted", c, len(p.Changes))
			}
			return nil
		})
	}
	want := map[ids.ID]string{legacy: "none", stating: "2-2", future: "3-4"}
	for c, w := range want {
		cl, err := st.ClinicByID(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		got := "none"
		if cl.ProtocolMin != nil && cl.ProtocolMax != nil {
			got = fmt.Sprintf("%d-%d", *cl.ProtocolMin, *cl.ProtocolMax)
		}
		if got != w {
			t.Errorf("clinic %s recorded range %s, want %s", c, got, w)
		}
	}

	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []ids.ID{legacy, stating} {
		var d amqp.Delivery
		testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			var ok bool
			if d, ok, err = ch.Get(wire.DownQueue(c), true); err != nil || !ok {
				return fmt.Errorf("clinic %s: no down message yet (%w)", c, err)
			}
			return nil
		})
		// A release before ranges decodes strictly: protocol exactly 2, no
		// unknown field.
		var b wire.Batch
		dec := json.NewDecoder(bytes.NewReader(d.Body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil || b.Protocol != wire.LegacyProtocol || b.Changes[0].Protocol != wire.LegacyProtocol {
			t.Errorf("clinic %s: down message %s: %v, want strict protocol 2", c, d.Body, err)
		}
		if p, stated, _ := wire.RangeOfHeaders(d.Headers); !stated || p != wire.Local() {
			t.Errorf("clinic %s: down message states %v (%v), want this node's %v", c, p, stated, wire.Local())
		}
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if got := counterValue(t, n.rep.incompatible); got != 1 {
			return fmt.Errorf("down_incompatible_total = %v, want 1", got)
		}
		return nil
	})
	if _, ok, _ := ch.Get(wire.DownQueue(future), true); ok {
		t.Error("a clinic speaking 3-4 got a down message from a node speaking 2")
	}
	if got := counterValue(t, n.rep.downProto.WithLabelValues("2")); got != 2 {
		t.Errorf("down_messages_total{protocol=2} = %v, want 2", got)
	}

	// A clinic rolled back to a release before ranges states none again.
	send(stating, nil)
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		cl, err := st.ClinicByID(ctx, stating)
		if err != nil || cl.ProtocolMin != nil {
			return fmt.Errorf("clinic %s range %v after a message stating none (%w)", stating, cl.Protocols(), err)
		}
		return nil
	})
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestRefreshKeepsNewerProtocols: a clinic-list refresh that read the list
// before an up message changed a clinic's range does not put the older
// range back (the node would send that clinic down messages in a version
// it no longer speaks until the next refresh); a refresh that reads the
// list after a change made elsewhere (another node) takes it.
func TestRefreshKeepsNewerProtocols(t *testing.T) {
	t.Parallel()
	st := openStore(t, testenv.PostgresDB(t))
	ctx := context.Background()
	c := ids.ID(7_400_000_000_011)
	enroll(t, st, c)
	// Its topology is current: the refresh has nothing to set up, so the
	// node needs no broker.
	if err := st.SetTopology(ctx, c, TopologyVersion); err != nil {
		t.Fatal(err)
	}
	r := New(st, nil, testLog(t), nil)
	refresh := func() {
		t.Helper()
		var wg sync.WaitGroup
		r.refreshClinics(ctx, &wg)
		wg.Wait()
	}
	known := func() statedRange {
		t.Helper()
		p, err := r.protocolsOf(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	refresh()
	if p := known(); p.stated {
		t.Fatalf("a clinic that stated no range is known as %v", p)
	}

	// An up message stating 2-3 is handled between the refresh's read of
	// the list (no range) and its update of the node's view.
	newer := wire.Range{Min: 2, Max: 3}
	r.listed = func() {
		r.listed = nil
		if _, err := st.SetProtocols(ctx, c, newer, true); err != nil {
			t.Error(err)
		}
		r.SetProtocols(c, newer, true)
	}
	refresh()
	if p := known(); p != (statedRange{newer, true}) {
		t.Fatalf("after a refresh that read the list first, the clinic is known as %v, want %v", p, newer)
	}
	refresh()
	if p := known(); p != (statedRange{newer, true}) {
		t.Fatalf("after the next refresh, the clinic is known as %v, want %v", p, newer)
	}

	// Another node records the clinic back on a release before ranges:
	// this node's next refresh takes it from the list.
	if _, err := st.SetProtocols(ctx, c, wire.Range{}, false); err != nil {
		t.Fatal(err)
	}
	refresh()
	if p := known(); p.stated {
		t.Fatalf("after another node recorded no range, the clinic is known as %v", p)
	}
}
