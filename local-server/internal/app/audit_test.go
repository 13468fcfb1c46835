package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/local-server/internal/cloudapi"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/ids"
)

// auditCloud stands in for the cloud's audit upload: it takes a chain's
// entries in order and counts each one it is sent, so a test sees an
// entry sent twice or skipped.
type auditCloud struct {
	mu    sync.Mutex
	head  int64
	sent  map[int64]int
	wrong []string
}

func (c *auditCloud) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in struct{ Entries []audit.Entry }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range in.Entries {
		c.sent[e.Seq]++
		switch {
		case e.Seq <= c.head:
			c.wrong = append(c.wrong, fmt.Sprintf("entry %d sent again (head %d)", e.Seq, c.head))
		case e.Seq != c.head+1:
			c.wrong = append(c.wrong, fmt.Sprintf("entry %d sent after head %d: skipped some", e.Seq, c.head))
		case audit.Hash(e) != e.Hash:
			c.wrong = append(c.wrong, fmt.Sprintf("entry %d does not match its hash", e.Seq))
		default:
			c.head = e.Seq
		}
	}
	_ = json.NewEncoder(w).Encode(map[string]int64{"head": c.head})
}

func (c *auditCloud) state() (int64, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.head, append([]string(nil), c.wrong...)
}

// newShipperForTest opens a clinic database and a shipper to a stand-in
// cloud.
func newShipperForTest(t testing.TB) (*auditShipper, *audit.Log, *auditCloud) {
	t.Helper()
	dir := t.TempDir()
	const clinic ids.ID = 9001
	gen, err := ids.NewGenerator(7, ids.GeneratorOptions{StateFile: filepath.Join(dir, "ids.state")})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "db"), clinic, gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l, err := audit.Open(t.Context(), st.DB())
	if err != nil {
		t.Fatal(err)
	}
	l = l.WithWriter(st.Write)
	cloud := &auditCloud{sent: map[int64]int{}}
	srv := httptest.NewServer(cloud)
	t.Cleanup(srv.Close)
	a, err := newAuditShipper(t.Context(), st.DB(), l, cloudapi.New(srv.URL, "token", clinic), "local:"+clinic.String(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return a, l, cloud
}

func appendEntries(ctx context.Context, t testing.TB, l *audit.Log, chain string, from, n int) {
	t.Helper()
	for i := range n {
		e := audit.Entry{Chain: chain, Clinic: 9001, Actor: fmt.Sprintf("user-%d", from+i), Username: "김 O'Brien",
			Action: "record.create", Kind: "patient", Target: fmt.Sprint(from + i), Remote: "127.0.0.1", Outcome: 201}
		if _, err := l.Append(ctx, e); err != nil {
			t.Errorf("Append(%d) = %v", from+i, err)
			return
		}
	}
}

// The shipper reads the entries the log holds, as the log lists them, and
// sends each one once, in order, across batches and appends made between
// and during its rounds.
func TestAuditShipperSendsEachEntryOnce(t *testing.T) {
	t.Parallel()
	a, l, cloud := newShipperForTest(t)
	ctx := t.Context()
	appendEntries(ctx, t, l, a.chain, 0, 700)

	// Its read (the log's List, fixed text) is what gorm reads.
	got, err := l.List(ctx, audit.Query{Chain: a.chain, After: 123, Limit: shipBatch})
	if err != nil {
		t.Fatal(err)
	}
	var want []audit.Entry
	if err := l.DB().Where("chain = ? AND seq > ?", a.chain, 123).Order("seq").Limit(shipBatch).Find(&want).Error; err != nil {
		t.Fatal(err)
	}
	if len(got) != shipBatch || !reflect.DeepEqual(got, want) {
		t.Fatalf("List(after 123) = %d entries, want the %d gorm reads, equal (first got %+v, want %+v)", len(got), len(want), got[0], want[0])
	}

	// Rounds as Run makes them: a full batch says more waits.
	for round := 1; ; round++ {
		more, err := a.ship(ctx)
		if err != nil {
			t.Fatalf("ship() round %d = %v", round, err)
		}
		if !more {
			break
		}
		if round > 10 {
			t.Fatal("ship() still says more after 10 rounds of 700 entries")
		}
	}
	if head, wrong := cloud.state(); head != 700 || len(wrong) > 0 {
		t.Fatalf("after shipping 700 entries the cloud's head is %d, want 700; %v", head, wrong)
	}

	// Appends while the shipper runs.
	a.every = 5 * time.Millisecond
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	appendEntries(ctx, t, l, a.chain, 700, 601)
	// Wait for the local mark as well as the cloud's head: the shipper
	// writes its mark after the cloud's answer, and a cancel in between
	// (the cloud at 1301, the mark not yet written) would leave the mark
	// behind, to be sent again at the next start.
	deadline := time.Now().Add(10 * time.Second)
	for {
		head, _ := cloud.state()
		s, _ := a.shipped(ctx)
		if (head >= 1301 && s >= 1301) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	head, wrong := cloud.state()
	if head != 1301 || len(wrong) > 0 {
		t.Fatalf("the cloud's head is %d, want 1301; %v", head, wrong)
	}
	for seq := int64(1); seq <= 1301; seq++ {
		if n := cloud.sent[seq]; n != 1 {
			t.Errorf("entry %d sent %d times, want once", seq, n)
		}
	}
	if s, err := a.shipped(ctx); s != 1301 || err != nil {
		t.Errorf("shipped() = %d, %v, want 1301", s, err)
	}
}

// BenchmarkAuditShipperRead reads a batch of entries to ship, as the
// shipper does (audit.Log.List's fixed text) and through gorm, as List did.
func BenchmarkAuditShipperRead(b *testing.B) {
	a, l, _ := newShipperForTest(b)
	ctx := b.Context()
	appendEntries(ctx, b, l, a.chain, 0, shipBatch)
	for _, c := range []struct {
		name string
		read func() ([]audit.Entry, error)
	}{
		{"sql", func() ([]audit.Entry, error) {
			return l.List(ctx, audit.Query{Chain: a.chain, After: 0, Limit: shipBatch})
		}},
		{"gorm", func() ([]audit.Entry, error) {
			var es []audit.Entry
			err := l.DB().WithContext(ctx).Where("chain = ? AND seq > ?", a.chain, 0).Order("seq").Limit(shipBatch).Find(&es).Error
			return es, err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if es, err := c.read(); err != nil || len(es) != shipBatch {
					b.Fatalf("read = %d entries, %v", len(es), err)
				}
			}
		})
	}
}
