package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// flakyBroker confirms the first ok publishes and fails the rest.
type flakyBroker struct {
	ok   int
	sent []wire.Batch
}

var errBrokerGone = errors.New("broker gone")

func (b *flakyBroker) Publish(_ context.Context, _, _ string, m amqpx.Message) error {
	if len(b.sent) == b.ok {
		return errBrokerGone
	}
	batch, err := wire.Decode(m.Body, m.ContentEncoding)
	if err != nil {
		return err
	}
	b.sent = append(b.sent, batch)
	return nil
}

func (b *flakyBroker) Consume(context.Context, string, amqpx.Handler) error { return nil }

// TestRelayDeletesWhatWasConfirmed: a relay round sends several messages
// and deletes their outbox rows together; when a publish fails, the rows
// of the messages confirmed before it are deleted and the rest stay, to
// go next, in order.
func TestRelayDeletesWhatWasConfirmed(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	var items []store.Import
	for i := range 3*wire.MaxBatch + 10 {
		items = append(items, store.Import{Kind: wire.KindPatient, Content: records.Patient{Name: fmt.Sprint("P", i)}})
	}
	if _, err := st.Import(ctx, items); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := st.Backfill(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if b.Records == 0 {
			break
		}
	}
	br := &flakyBroker{ok: 2}
	s := New(st, br, &growingFeed{}, time.Hour, slog.New(slog.DiscardHandler), nil)
	n, err := s.relayOnce(ctx)
	if !errors.Is(err, errBrokerGone) || n != 2*wire.MaxBatch {
		t.Fatalf("relayOnce = %d, %v; want %d, the broker's error", n, err, 2*wire.MaxBatch)
	}
	left, err := st.NextOutbox(ctx, 10*wire.MaxBatch)
	if err != nil || len(left) != wire.MaxBatch+10 {
		t.Fatalf("outbox after the failure: %d rows, %v; want %d", len(left), err, wire.MaxBatch+10)
	}
	br.ok = 100
	if n, err := s.relayOnce(ctx); err != nil || n != wire.MaxBatch+10 {
		t.Fatalf("relayOnce again = %d, %v; want %d", n, err, wire.MaxBatch+10)
	}
	seen := map[string]bool{}
	var last int64
	for _, b := range br.sent {
		for _, e := range b.Changes {
			if seen[e.ChangeID.String()] {
				t.Fatalf("change %s sent twice", e.ChangeID)
			}
			seen[e.ChangeID.String()] = true
			if int64(e.ChangeID) < last {
				t.Fatalf("change %s sent after %d", e.ChangeID, last)
			}
			last = int64(e.ChangeID)
		}
	}
	if len(seen) != len(items) {
		t.Fatalf("%d changes sent, want %d", len(seen), len(items))
	}
	if rows, _ := st.NextOutbox(ctx, 10); len(rows) != 0 {
		t.Fatalf("outbox keeps %d rows", len(rows))
	}
}

// countingBroker keeps every batch published (safe for the relay's
// goroutine and the test's).
type countingBroker struct {
	mu   sync.Mutex
	sent []wire.Batch
}

func (b *countingBroker) Publish(_ context.Context, _, _ string, m amqpx.Message) error {
	batch, err := wire.Decode(m.Body, m.ContentEncoding)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent = append(b.sent, batch)
	return nil
}

func (b *countingBroker) Consume(context.Context, string, amqpx.Handler) error { return nil }

func (b *countingBroker) batches() []wire.Batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]wire.Batch(nil), b.sent...)
}

// TestRelayLingersWhileSavesGoOn: while a client saves without a pause,
// the relay sends a message at most every relayLinger, each with the
// changes saved meanwhile, not one for the few changes committed during
// each publish; every change goes once, in order.
func TestRelayLingersWhileSavesGoOn(t *testing.T) {
	st := openStore(t)
	br := &countingBroker{}
	s := New(st, br, &growingFeed{}, time.Hour, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.relay(ctx)
	}()
	start := time.Now()
	saved := 0
	for time.Since(start) < 300*time.Millisecond {
		if _, err := st.Save(ctx, store.Edit{Kind: wire.KindPatient, Content: records.Patient{Name: fmt.Sprint("P", saved)}}); err != nil {
			t.Fatal(err)
		}
		saved++
		s.Wake()
	}
	elapsed := time.Since(start)
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; n < saved; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d changes published after 10 s", n, saved)
		}
		time.Sleep(10 * time.Millisecond)
		n = 0
		for _, b := range br.batches() {
			n += len(b.Changes)
		}
	}
	cancel()
	<-done
	sent := br.batches()
	// A message at the start, then at most one per linger (and one for
	// the changes of the last moment).
	if most := int(elapsed/relayLinger) + 3; len(sent) > most {
		t.Errorf("%d changes saved in %v went in %d messages, want at most %d", saved, elapsed.Round(time.Millisecond), len(sent), most)
	}
	var last int64
	n := 0
	for _, b := range sent {
		for _, e := range b.Changes {
			if int64(e.ChangeID) <= last {
				t.Fatalf("change %s sent after %d", e.ChangeID, last)
			}
			last = int64(e.ChangeID)
			n++
		}
	}
	if n != saved {
		t.Fatalf("%d changes sent, want %d", n, saved)
	}
}
