package syncer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

const testClinic ids.ID = 9001

// growingFeed is a cloud whose change feed grows by a page on every read,
// as it does while a backfill is accepted as fast as it is pulled.
type growingFeed struct {
	mu    sync.Mutex
	feed  []wire.Envelope
	calls int
}

func (g *growingFeed) grow(n int) {
	for range n {
		seq := int64(len(g.feed) + 1)
		b, _ := json.Marshal(records.Sample(wire.KindPatient, int(seq), nil))
		g.feed = append(g.feed, wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: testClinic,
			Origin: wire.OriginCloud, ChangeID: ids.ID(1_000_000 + seq), Kind: wire.KindPatient, RecordID: ids.ID(2_000_000 + seq),
			NewVersion: version.V{A: 1}, CloudSeq: seq, At: time.Now(), Payload: b})
	}
}

func (g *growingFeed) Changes(_ context.Context, since int64, limit int) (wire.ChangesPage, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	if g.calls < 50 {
		g.grow(2 * limit)
	}
	p := wire.ChangesPage{Next: since, Head: int64(len(g.feed))}
	for _, e := range g.feed[since:] {
		if len(p.Changes) == limit {
			p.More = true
			break
		}
		p.Changes = append(p.Changes, e)
		p.Next = e.CloudSeq
	}
	return p, nil
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	dir := t.TempDir()
	gen, err := ids.NewGenerator(7, ids.GeneratorOptions{StateFile: filepath.Join(dir, "ids.state")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "db"), testClinic, gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestCatchUpStopsAtHead: a pull takes the feed up to the head its first
// page states and lets go, though the feed grew meanwhile; chasing it held
// the down queue back for as long as a backfill ran (the clinic then
// learned of the cloud's acceptances a page per HTTP round trip).
func TestCatchUpStopsAtHead(t *testing.T) {
	st := openStore(t)
	feed := &growingFeed{}
	s := New(st, nil, feed, time.Hour, slog.New(slog.DiscardHandler), nil)
	ctx := context.Background()
	if err := s.CatchUp(ctx); err != nil {
		t.Fatalf("CatchUp() = %v", err)
	}
	cp, err := st.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp != 1000 || feed.calls != 2 {
		t.Fatalf("CatchUp() applied up to %d in %d pulls, want 1000 (the first page's head) in 2", cp, feed.calls)
	}
	// A gap to fill must reach its end, wherever the head was.
	s.applyMu.Lock()
	err = s.catchUpLocked(ctx, 2700)
	s.applyMu.Unlock()
	if cp, _ = st.Checkpoint(ctx); err != nil || cp < 2700 {
		t.Fatalf("catchUpLocked(2700) = %v, checkpoint %d; want at least 2700", err, cp)
	}
	// While the down queue flows, the periodic pull takes one page.
	s.applyMu.Lock()
	err = s.pullLocked(ctx, 0, 1)
	s.applyMu.Unlock()
	if next, _ := st.Checkpoint(ctx); err != nil || next != cp+500 {
		t.Fatalf("pullLocked(0, 1 page) = %v, checkpoint %d; want %d", err, next, cp+500)
	}
}

// TestBackfillWindow: the backfill keeps about a second of the cloud's
// acknowledgments unacknowledged, within [sentMin, sentMax].
func TestBackfillWindow(t *testing.T) {
	tests := []struct {
		name      string
		perSecond int64 // acknowledged in each of the last seconds
		want      int64
	}{
		{"no acknowledgment yet", 0, sentMin},
		{"a slow cloud", 1000, sentMin},
		{"a fast pipe", 12000, 12000},
		{"faster than the cap", 100000, sentMax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Syncer{}
			now := time.Now()
			for d := range ackSeconds {
				s.rate.add(now.Add(-time.Duration(d)*time.Second), tt.perSecond)
			}
			if got := s.window(); got != tt.want {
				t.Errorf("window() = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestBackfillLoopQueuesEachRecordOnce runs the backfill loop over a
// history of several batches (each read while the one before is written):
// every record is queued once, patients (undated) first, then the studies
// newest first, and the loop then finds nothing left.
func TestBackfillLoopQueuesEachRecordOnce(t *testing.T) {
	st := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := st.SetScope(ctx, store.Scope{Kinds: []wire.Kind{wire.KindSetting}}); err != nil {
		t.Fatal(err)
	}
	var pats []store.Import
	for i := range 30 {
		pats = append(pats, store.Import{Kind: wire.KindPatient, Content: records.Patient{Name: fmt.Sprint("P", i)}})
	}
	pids, err := st.Import(ctx, pats)
	if err != nil {
		t.Fatal(err)
	}
	const studies = 3*backfillBatch + 470
	var items []store.Import
	for j := range studies {
		date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -(j*7919)%3650).Format(time.DateOnly)
		items = append(items, store.Import{Kind: wire.KindStudy, Content: records.Study{PatientID: pids[j%len(pids)], StudyDate: date}})
	}
	if _, err := st.Import(ctx, items); err != nil {
		t.Fatal(err)
	}
	if err := st.SetScope(ctx, store.Scope{}); err != nil {
		t.Fatal(err)
	}
	s := New(st, &flakyBroker{}, &growingFeed{}, time.Hour, slog.New(slog.DiscardHandler), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.backfill(ctx)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := st.BackfillRemaining(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backfill: %d records left after 30 s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	rows, err := st.NextOutbox(context.Background(), 2*studies)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != studies+len(pids) {
		t.Fatalf("outbox holds %d changes, want %d", len(rows), studies+len(pids))
	}
	seen := map[ids.ID]bool{}
	last := "9999-12-31"
	for i, r := range rows {
		var e wire.Envelope
		if err := json.Unmarshal([]byte(r.Envelope), &e); err != nil {
			t.Fatal(err)
		}
		if seen[e.RecordID] {
			t.Fatalf("row %d: %s %s queued twice", i, e.Kind, e.RecordID)
		}
		seen[e.RecordID] = true
		if (i < len(pids)) != (e.Kind == wire.KindPatient) {
			t.Fatalf("row %d is a %s; want the %d patients first", i, e.Kind, len(pids))
		}
		if e.Kind != wire.KindStudy {
			continue
		}
		var c records.Study
		if err := json.Unmarshal(e.Payload, &c); err != nil {
			t.Fatal(err)
		}
		if c.StudyDate > last {
			t.Fatalf("row %d: study of %s after one of %s; want newest first", i, c.StudyDate, last)
		}
		last = c.StudyDate
	}
}
