package store

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

const clinic = ids.ID(9001)

func open(t *testing.T) *Store {
	t.Helper()
	dir := t.TempDir()
	gen, err := ids.NewGenerator(5, ids.GeneratorOptions{StateFile: filepath.Join(dir, "ids.state")})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(dir, "db", "scsync.db"), clinic, gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func outbox(t *testing.T, s *Store) []wire.Envelope {
	t.Helper()
	rows, err := s.NextOutbox(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.Envelope
	for _, r := range rows {
		e, err := wire.Decode(r.Body, r.ContentEncoding)
		if err != nil {
			t.Fatalf("outbox row %d: %v", r.ID, err)
		}
		out = append(out, e)
	}
	return out
}

func TestLocalChangesGoToOutbox(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	p, err := s.SavePatient(ctx, 0, nil, records.Patient{Name: "Kim"}, false)
	if err != nil {
		t.Fatal(err)
	}
	v1 := version.First
	p2, err := s.SavePatient(ctx, p.ID, &v1, records.Patient{Name: "Kim", Phone: "010"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SavePatient(ctx, p.ID, &v1, records.Patient{Name: "stale"}, false); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("save with stale base: err = %v, want ErrVersionConflict", err)
	}
	p3, err := s.SavePatient(ctx, p.ID, nil, records.Patient{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SavePatient(ctx, p.ID, nil, records.Patient{Name: "x"}, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("edit of a tombstone: err = %v, want ErrNotFound", err)
	}
	got := []string{p.Version.String(), p2.Version.String(), p3.Version.String()}
	if got[0] != "1.0" || got[1] != "2.0" || got[2] != "3.0" || !p3.Deleted || p3.SyncState != StatePending {
		t.Fatalf("versions %v, deleted %v, state %s", got, p3.Deleted, p3.SyncState)
	}
	es := outbox(t, s)
	if len(es) != 3 {
		t.Fatalf("outbox holds %d messages, want 3 (failed saves must write none)", len(es))
	}
	wantBase := []string{"0.0", "1.0", "2.0"}
	for i, e := range es {
		if e.RecordID != p.ID || e.Clinic != clinic || e.Origin != wire.OriginLocal || e.BaseVersion.String() != wantBase[i] || e.NewVersion.String() != got[i] {
			t.Errorf("outbox[%d] = %+v", i, e)
		}
	}
	if !es[2].Deleted || es[2].Payload != nil {
		t.Errorf("delete message = %+v, want a tombstone without payload", es[2])
	}
}

func applied(seq int64, origin wire.Origin, changeID, record ids.ID, v version.V, name string) wire.Envelope {
	b, _ := json.Marshal(records.Patient{Name: name})
	return wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: clinic, Origin: origin, ChangeID: changeID,
		Kind: wire.KindPatient, RecordID: record, NewVersion: v, CloudSeq: seq, At: time.Now(), Payload: b}
}

func TestApplyDownOrderAndAcceptance(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	p, err := s.SavePatient(ctx, 0, nil, records.Patient{Name: "Lee"}, false)
	if err != nil {
		t.Fatal(err)
	}
	// The acceptance of our own change: synced, not a new record.
	accept := applied(1, wire.OriginLocal, p.PendingChangeID, p.ID, version.First, "Lee")
	steps := []struct {
		name string
		e    wire.Envelope
		want ApplyResult
	}{
		{"gap", applied(3, wire.OriginCloud, 77, 5555, version.First, "Park"), Gap},
		{"acceptance", accept, Applied},
		{"duplicate", accept, Duplicate},
		{"cloud record", applied(2, wire.OriginCloud, 78, 5556, version.First, "Choi"), Applied},
		{"after gap filled", applied(3, wire.OriginCloud, 77, 5555, version.First, "Park"), Applied},
	}
	for _, st := range steps {
		res, err := s.ApplyDown(ctx, st.e)
		if err != nil || res != st.want {
			t.Fatalf("%s: ApplyDown = %v, %v; want %v", st.name, res, err, st.want)
		}
	}
	got, _ := s.GetPatient(ctx, p.ID)
	if got.SyncState != StateSynced || got.SyncedAt == nil || got.Version != version.First {
		t.Fatalf("own record after acceptance = %+v", got)
	}
	if cp, _ := s.Checkpoint(ctx); cp != 3 {
		t.Fatalf("checkpoint = %d, want 3", cp)
	}
	// Applying cloud changes wrote nothing to send back up (no echo).
	if es := outbox(t, s); len(es) != 1 {
		t.Fatalf("outbox holds %d messages, want only the original create", len(es))
	}
	st, err := s.Status(ctx)
	if err != nil || st.Synced != 3 || st.Pending != 0 || st.Checkpoint != 3 || st.LastContact == nil {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}

func TestPendingLocalChangeSurvivesCloudChange(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	p, _ := s.SavePatient(ctx, 0, nil, records.Patient{Name: "Jung"}, false)
	first := p.PendingChangeID
	p2, _ := s.SavePatient(ctx, p.ID, nil, records.Patient{Name: "Jung Local Edit"}, false)

	// The acceptance of the first change must not mark the record synced:
	// a newer local change is still on its way.
	if _, err := s.ApplyDown(ctx, applied(1, wire.OriginLocal, first, p.ID, version.First, "Jung")); err != nil {
		t.Fatal(err)
	}
	// A concurrent cloud edit does not overwrite the pending local edit; the
	// cloud judges the conflict when the local change arrives.
	if _, err := s.ApplyDown(ctx, applied(2, wire.OriginCloud, 99, p.ID, version.V{A: 2}, "Jung Cloud Edit")); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetPatient(ctx, p.ID)
	if got.Name != "Jung Local Edit" || got.SyncState != StatePending || got.PendingChangeID != p2.PendingChangeID {
		t.Fatalf("record = %+v, want the pending local edit kept", got)
	}
	// Its own acceptance finally syncs it.
	if _, err := s.ApplyDown(ctx, applied(3, wire.OriginLocal, p2.PendingChangeID, p.ID, version.V{A: 3}, "Jung Local Edit")); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetPatient(ctx, p.ID)
	if got.SyncState != StateSynced || got.Version != (version.V{A: 3}) {
		t.Fatalf("record = %+v, want synced at 3.0", got)
	}
}

func TestApplyDownInvalidPayload(t *testing.T) {
	s := open(t)
	e := applied(1, wire.OriginCloud, 5, 6, version.First, "x")
	e.Payload = json.RawMessage(`["not","an","object"]`)
	if _, err := s.ApplyDown(context.Background(), e); !errors.Is(err, ErrInvalidChange) {
		t.Fatalf("ApplyDown(bad payload) = %v, want ErrInvalidChange", err)
	}
	if cp, _ := s.Checkpoint(context.Background()); cp != 0 {
		t.Fatalf("checkpoint moved to %d on a failed apply", cp)
	}
}
