package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), testenv.PostgresDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func enroll(t *testing.T, s *Store, id ids.ID) Clinic {
	t.Helper()
	c, tok, err := s.CreateClinic(context.Background(), id, fmt.Sprintf("clinic %d", id), "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.ClinicByToken(context.Background(), tok)
	if err != nil || got.ID != id {
		t.Fatalf("ClinicByToken = %v, %v", got.ID, err)
	}
	return c
}

func change(clinic, changeID, record ids.ID, base, next version.V, name string) wire.Envelope {
	b, _ := json.Marshal(records.Patient{Name: name})
	return wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: clinic, Origin: wire.OriginLocal,
		ChangeID: changeID, Kind: wire.KindPatient, RecordID: record, BaseVersion: base, NewVersion: next, At: time.Now(), Payload: b}
}

func TestApplyUpIdempotent(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100)
	e := change(100, 1, 500, version.V{}, version.First, "Kim")
	for i, want := range []bool{true, false, false} {
		fresh, err := s.ApplyUp(ctx, e)
		if err != nil || fresh != want {
			t.Fatalf("delivery %d: ApplyUp = %v, %v; want %v", i+1, fresh, err, want)
		}
	}
	page, err := s.ChangesSince(ctx, 100, 0, 10)
	if err != nil || len(page.Changes) != 1 || page.Head != 1 {
		t.Fatalf("ChangesSince = %+v, %v; want exactly one change", page, err)
	}
	if n, _ := s.OutboxLen(ctx); n != 1 {
		t.Fatalf("outbox = %d, want 1", n)
	}
}

func TestApplyUpRejectsBadContent(t *testing.T) {
	s := open(t)
	enroll(t, s, 100)
	e := change(100, 1, 500, version.V{}, version.First, "")
	if _, err := s.ApplyUp(context.Background(), e); !errors.Is(err, ErrInvalidChange) {
		t.Fatalf("ApplyUp(empty name) = %v, want ErrInvalidChange", err)
	}
	e = change(999, 1, 500, version.V{}, version.First, "x")
	if _, err := s.ApplyUp(context.Background(), e); !errors.Is(err, ErrUnknownClinic) {
		t.Fatalf("ApplyUp(unknown clinic) = %v, want ErrUnknownClinic", err)
	}
	if n, _ := s.OutboxLen(context.Background()); n != 0 {
		t.Fatalf("outbox = %d after rejected changes, want 0", n)
	}
}

// TestSequenceIsDenseUnderConcurrency: many nodes accepting changes of one
// clinic at once still produce cloud_seq 1..N with no gap and no repeat.
func TestSequenceIsDenseUnderConcurrency(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.ApplyUp(ctx, change(100, ids.ID(1000+i), ids.ID(5000+i), version.V{}, version.First, "p")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var seqs []int64
	for since := int64(0); ; {
		page, err := s.ChangesSince(ctx, 100, since, 37)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page.Changes {
			seqs = append(seqs, c.CloudSeq)
		}
		since = page.Next
		if !page.More {
			break
		}
	}
	if len(seqs) != n {
		t.Fatalf("%d changes, want %d", len(seqs), n)
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("seq[%d] = %d, want %d", i, s, i+1)
		}
	}
}

func TestClinicIsolation(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	a, b := enroll(t, s, 100), enroll(t, s, 200)
	if a.NodeID == b.NodeID || !ids.ValidClinicNode(a.NodeID) || !ids.ValidClinicNode(b.NodeID) {
		t.Fatalf("node ids %d, %d: want distinct clinic node ids", a.NodeID, b.NodeID)
	}
	if _, err := s.ApplyUp(ctx, change(100, 1, 500, version.V{}, version.First, "A's patient")); err != nil {
		t.Fatal(err)
	}
	// Clinic B sends a change naming the same record id: it gets its own row.
	if _, err := s.ApplyUp(ctx, change(200, 2, 500, version.V{}, version.First, "B's patient")); err != nil {
		t.Fatal(err)
	}
	pa, err := s.GetPatient(ctx, 100, 500)
	if err != nil || pa.Name != "A's patient" {
		t.Fatalf("A's record = %+v, %v", pa, err)
	}
	if _, err := s.SavePatient(ctx, 200, 999, version.First, records.Patient{Name: "x"}, 3, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("B editing a record it does not have: %v, want ErrNotFound", err)
	}
	pageB, _ := s.ChangesSince(ctx, 200, 0, 10)
	for _, c := range pageB.Changes {
		if c.Clinic != 200 {
			t.Fatalf("B's feed holds a change of clinic %s", c.Clinic)
		}
	}
}

func TestRelayBatchKeepsUnpublished(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100)
	for i := range 5 {
		if _, err := s.ApplyUp(ctx, change(100, ids.ID(10+i), ids.ID(50+i), version.V{}, version.First, "p")); err != nil {
			t.Fatal(err)
		}
	}
	var got []int64
	n, err := s.RelayBatch(ctx, 10, func(_ context.Context, e wire.Envelope) error {
		if len(got) == 3 {
			return errors.New("broker went away")
		}
		got = append(got, e.CloudSeq)
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("RelayBatch = %d, %v; want 3 published", n, err)
	}
	if left, _ := s.OutboxLen(ctx); left != 2 {
		t.Fatalf("outbox = %d after partial relay, want 2", left)
	}
	var rest []int64
	if _, err := s.RelayBatch(ctx, 10, func(_ context.Context, e wire.Envelope) error {
		rest = append(rest, e.CloudSeq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got, rest) != "[1 2 3] [4 5]" {
		t.Fatalf("relayed %v then %v, want [1 2 3] then [4 5]", got, rest)
	}
}

func TestCloudEditsAndConcurrentLocalChange(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100)
	if _, err := s.ApplyUp(ctx, change(100, 1, 500, version.V{}, version.First, "v1")); err != nil {
		t.Fatal(err)
	}
	p, err := s.SavePatient(ctx, 100, 500, version.First, records.Patient{Name: "cloud edit"}, 2, false)
	if err != nil || p.Version != (version.V{A: 2}) || p.Origin != "cloud" {
		t.Fatalf("cloud edit = %+v, %v", p, err)
	}
	if _, err := s.SavePatient(ctx, 100, 500, version.First, records.Patient{Name: "stale"}, 3, false); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("stale cloud edit = %v, want ErrVersionConflict", err)
	}
	// The clinic edited 1.0 → 2.0 concurrently: local wins by default, and the
	// result is newer than both sides so the clinic's copy converges.
	if _, err := s.ApplyUp(ctx, change(100, 4, 500, version.First, version.V{A: 2}, "local edit")); err != nil {
		t.Fatal(err)
	}
	p, _ = s.GetPatient(ctx, 100, 500)
	if p.Name != "local edit" || p.Version != (version.V{A: 3}) {
		t.Fatalf("after concurrent local edit = %+v, want local content at 3.0", p)
	}
}
