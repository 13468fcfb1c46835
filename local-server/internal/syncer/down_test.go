package syncer

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// TestDownMessagesTogether: down messages taken together apply their
// changes in queue order; an event is handed over only after the changes
// before it were applied; a malformed message is poison alone and the
// others are applied.
func TestDownMessagesTogether(t *testing.T) {
	st := openStore(t)
	s := New(st, nil, &growingFeed{}, time.Hour, slog.New(slog.DiscardHandler), nil)
	ctx := context.Background()
	msg := func(from, to int64) amqpx.Delivery {
		var es []wire.Envelope
		for seq := from; seq <= to; seq++ {
			b, _ := json.Marshal(records.Sample(wire.KindPatient, int(seq), nil))
			es = append(es, wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: testClinic,
				Origin: wire.OriginCloud, ChangeID: ids.ID(1_000_000 + seq), Kind: wire.KindPatient, RecordID: ids.ID(2_000_000 + seq),
				NewVersion: version.V{A: 1}, CloudSeq: seq, At: time.Now(), Payload: b})
		}
		body, enc, err := wire.Encode(wire.NewBatch(testClinic, es...))
		if err != nil {
			t.Fatal(err)
		}
		return amqpx.Delivery{Body: body, ContentEncoding: enc, Type: string(wire.TypeApplied)}
	}
	var seenAt []int64 // the checkpoint when each event was handed over
	s.OnEvents(func(ctx context.Context, _ amqpx.Delivery) error {
		cp, err := st.Checkpoint(ctx)
		seenAt = append(seenAt, cp)
		return err
	})
	ds := []amqpx.Delivery{
		msg(1, 3),
		{Type: events.MessageType, Body: []byte(`{}`)},
		msg(4, 5),
		{Body: []byte("not a batch"), Type: string(wire.TypeApplied)},
		msg(6, 9),
		{Type: events.MessageType, Body: []byte(`{}`)},
	}
	out := s.handleDownBatch(ctx, ds)
	for i, err := range out {
		if poison := amqpx.IsPoison(err); (i == 3) != poison || (i != 3 && err != nil) {
			t.Fatalf("handleDownBatch: delivery %d: %v, want poison only for the malformed one (3)", i, err)
		}
	}
	if cp, err := st.Checkpoint(ctx); err != nil || cp != 9 {
		t.Fatalf("checkpoint after the batch = %d, %v; want 9", cp, err)
	}
	if len(seenAt) != 2 || seenAt[0] != 3 || seenAt[1] != 9 {
		t.Fatalf("events handed over at checkpoints %v, want [3 9]", seenAt)
	}
}
