package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

const clinic = ids.ID(9001)

func open(t testing.TB) *Store {
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

func save(t *testing.T, s *Store, ed Edit) Record {
	t.Helper()
	r, err := s.Save(context.Background(), ed)
	if err != nil {
		t.Fatalf("Save(%s %s) = %v", ed.Kind, ed.ID, err)
	}
	return r
}

func get(t *testing.T, s *Store, kind wire.Kind, id ids.ID) (Meta, records.Content) {
	t.Helper()
	r, err := s.Get(context.Background(), kind, id)
	if err != nil {
		t.Fatalf("Get(%s %s) = %v", kind, id, err)
	}
	return RecordMeta(r), RecordContent(r)
}

func outbox(t *testing.T, s *Store) []wire.Envelope {
	t.Helper()
	rows, err := s.NextOutbox(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.Envelope
	for _, r := range rows {
		var e wire.Envelope
		if err := json.Unmarshal([]byte(r.Envelope), &e); err != nil {
			t.Fatalf("outbox row %d: %v", r.ID, err)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("outbox row %d: %v", r.ID, err)
		}
		out = append(out, e)
	}
	return out
}

func TestLocalChangesGoToOutbox(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	p := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Kim"}}))
	v1 := version.First
	p2 := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, ID: p.ID, Base: &v1, Content: records.Patient{Name: "Kim", Phone: "010"}}))
	if _, err := s.Save(ctx, Edit{Kind: wire.KindPatient, ID: p.ID, Base: &v1, Content: records.Patient{Name: "stale"}}); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("save with stale base: err = %v, want ErrVersionConflict", err)
	}
	p3 := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, ID: p.ID, Delete: true}))
	if _, err := s.Save(ctx, Edit{Kind: wire.KindPatient, ID: p.ID, Content: records.Patient{Name: "x"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("edit of a tombstone: err = %v, want ErrNotFound", err)
	}
	got := []string{p.Version.String(), p2.Version.String(), p3.Version.String()}
	if got[0] != "1.0" || got[1] != "2.0" || got[2] != "3.0" || !p3.Deleted || p3.SyncState != StatePending {
		t.Fatalf("versions %v, deleted %v, state %s", got, p3.Deleted, p3.SyncState)
	}
	es := outbox(t, s)
	if len(es) != 3 {
		t.Fatalf("outbox holds %d changes, want 3 (failed saves must write none)", len(es))
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

func TestEveryKindAndReferences(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	// A child naming a parent that does not exist is refused.
	_, err := s.Save(ctx, Edit{Kind: wire.KindStudy, Content: records.Sample(wire.KindStudy, 1, map[wire.Kind]ids.ID{wire.KindPatient: 424242})})
	if !errors.Is(err, ErrMissingRef) {
		t.Fatalf("study of an unknown patient: err = %v, want ErrMissingRef", err)
	}
	parents := map[wire.Kind]ids.ID{}
	for i, spec := range records.Kinds {
		r := save(t, s, Edit{Kind: spec.Kind, Content: records.Sample(spec.Kind, i, parents)})
		m := RecordMeta(r)
		parents[spec.Kind] = m.ID
		if m.Kind != spec.Kind || m.Version != version.First || m.SyncState != StatePending {
			t.Errorf("%s created = %+v", spec.Kind, m)
		}
		_, c := get(t, s, spec.Kind, m.ID)
		want, _ := json.Marshal(records.Sample(spec.Kind, i, parents))
		if got, _ := json.Marshal(c); string(got) != string(want) {
			t.Errorf("%s content = %s, want %s", spec.Kind, got, want)
		}
	}
	imgs, err := s.List(ctx, wire.KindImage, ListQuery{Parent: parents[wire.KindStudy]})
	if err != nil || len(imgs) != 1 {
		t.Fatalf("images of the study = %d, %v; want 1", len(imgs), err)
	}
	if other, _ := s.List(ctx, wire.KindImage, ListQuery{Parent: 1}); len(other) != 0 {
		t.Fatalf("images of another study = %d, want 0", len(other))
	}
	if es := outbox(t, s); len(es) != len(records.Kinds) {
		t.Fatalf("outbox holds %d changes, want %d", len(es), len(records.Kinds))
	}
	st, err := s.Status(ctx)
	if err != nil || st.Pending != int64(len(records.Kinds)) || st.Outbox != int64(len(records.Kinds)) || st.OldestPendingAge <= 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}

func applied(seq int64, origin wire.Origin, changeID, record ids.ID, v version.V, name string) wire.Envelope {
	b, _ := json.Marshal(records.Patient{Name: name})
	return wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: clinic, Origin: origin, ChangeID: changeID,
		Kind: wire.KindPatient, RecordID: record, NewVersion: v, CloudSeq: seq, At: time.Now(), Payload: b}
}

func applyDown(t *testing.T, s *Store, es ...wire.Envelope) DownResult {
	t.Helper()
	res, err := s.ApplyDown(context.Background(), es)
	if err != nil {
		t.Fatalf("ApplyDown = %v", err)
	}
	return res
}

func TestApplyDownOrderAndAcceptance(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	p := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Lee"}}))
	// The acceptance of our own change: synced, not a new record.
	accept := applied(1, wire.OriginLocal, p.PendingChangeID, p.ID, version.First, "Lee")
	steps := []struct {
		name string
		es   []wire.Envelope
		want DownResult
	}{
		{"gap", []wire.Envelope{applied(3, wire.OriginCloud, 77, 5555, version.First, "Park")}, DownResult{Gap: 3}},
		{"acceptance", []wire.Envelope{accept}, DownResult{Applied: 1}},
		{"duplicate", []wire.Envelope{accept}, DownResult{Duplicates: 1}},
		{"batch with a gap inside", []wire.Envelope{
			applied(2, wire.OriginCloud, 78, 5556, version.First, "Choi"),
			applied(4, wire.OriginCloud, 79, 5557, version.First, "Han"),
		}, DownResult{Applied: 1, Gap: 4}},
		{"gap filled", []wire.Envelope{
			applied(3, wire.OriginCloud, 77, 5555, version.First, "Park"),
			applied(4, wire.OriginCloud, 79, 5557, version.First, "Han"),
		}, DownResult{Applied: 2}},
	}
	for _, st := range steps {
		got := applyDown(t, s, st.es...)
		if len(got.Changes) != got.Applied {
			t.Fatalf("%s: %d changes listed for %d applied", st.name, len(got.Changes), got.Applied)
		}
		got.Changes = nil
		if !reflect.DeepEqual(got, st.want) {
			t.Fatalf("%s: ApplyDown = %+v, want %+v", st.name, got, st.want)
		}
	}
	m, _ := get(t, s, wire.KindPatient, p.ID)
	if m.SyncState != StateSynced || m.SyncedAt == nil || m.Version != version.First {
		t.Fatalf("own record after acceptance = %+v", m)
	}
	if cp, _ := s.Checkpoint(ctx); cp != 4 {
		t.Fatalf("checkpoint = %d, want 4", cp)
	}
	// Applying cloud changes wrote nothing to send back up (no echo).
	if es := outbox(t, s); len(es) != 1 {
		t.Fatalf("outbox holds %d changes, want only the original create", len(es))
	}
	st, err := s.Status(ctx)
	if err != nil || st.Synced != 4 || st.Pending != 0 || st.Checkpoint != 4 || st.LastContact == nil {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}

func TestPendingLocalChangeSurvivesCloudChange(t *testing.T) {
	s := open(t)
	p := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Jung"}}))
	first := p.PendingChangeID
	p2 := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, ID: p.ID, Content: records.Patient{Name: "Jung Local Edit"}}))

	// The acceptance of the first change must not mark the record synced:
	// a newer local change is still on its way. A concurrent cloud edit does
	// not overwrite the pending local edit either; the cloud judges the
	// conflict when the local change arrives.
	applyDown(t, s,
		applied(1, wire.OriginLocal, first, p.ID, version.First, "Jung"),
		applied(2, wire.OriginCloud, 99, p.ID, version.V{A: 2}, "Jung Cloud Edit"))
	m, c := get(t, s, wire.KindPatient, p.ID)
	if c.(records.Patient).Name != "Jung Local Edit" || m.SyncState != StatePending || m.PendingChangeID != p2.PendingChangeID {
		t.Fatalf("record = %+v %+v, want the pending local edit kept", m, c)
	}
	// Its own acceptance (renumbered by the cloud's resolution) syncs it.
	applyDown(t, s, applied(3, wire.OriginLocal, p2.PendingChangeID, p.ID, version.V{A: 3}, "Jung Local Edit"))
	m, _ = get(t, s, wire.KindPatient, p.ID)
	if m.SyncState != StateSynced || m.Version != (version.V{A: 3}) {
		t.Fatalf("record = %+v, want synced at 3.0", m)
	}
}

func TestKeepBothFlagsConflict(t *testing.T) {
	s := open(t)
	p := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Yoon"}}))
	res := applied(1, wire.OriginCloud, p.PendingChangeID, p.ID, version.V{A: 2}, "Yoon (cloud)")
	res.Conflict = wire.ResolvedKeepBoth
	cp := applied(2, wire.OriginCloud, 555, 556, version.First, "Yoon")
	cp.Conflict, cp.ConflictOf = wire.ResolvedKeepBoth, p.ID
	applyDown(t, s, res, cp)
	m, c := get(t, s, wire.KindPatient, p.ID)
	if m.SyncState != StateConflict || c.(records.Patient).Name != "Yoon (cloud)" {
		t.Fatalf("original = %+v %+v, want the cloud's content flagged conflict", m, c)
	}
	m, c = get(t, s, wire.KindPatient, 556)
	if m.SyncState != StateConflict || m.ConflictOf != p.ID || c.(records.Patient).Name != "Yoon" {
		t.Fatalf("copy = %+v %+v, want the local content as a flagged copy", m, c)
	}
	if st, _ := s.Status(context.Background()); st.Conflict != 2 {
		t.Fatalf("Status.Conflict = %d, want 2", st.Conflict)
	}
	// Editing the flagged record is how a person resolves it: pending again.
	m = RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, ID: p.ID, Content: records.Patient{Name: "Yoon (merged)"}}))
	if m.SyncState != StatePending {
		t.Fatalf("edited conflict record state = %s, want pending", m.SyncState)
	}
}

func TestApplyDownSkipsUnrepresentable(t *testing.T) {
	s := open(t)
	e := applied(1, wire.OriginCloud, 5, 6, version.First, "x")
	e.Payload = json.RawMessage(`{"name":"x","from_the_future":true}`)
	if got := applyDown(t, s, e, applied(2, wire.OriginCloud, 7, 8, version.First, "y")); got.Applied != 1 || got.Skipped != 1 || got.Gap != 0 {
		t.Fatalf("ApplyDown = %+v, want one applied, one skipped", got)
	}
	if cp, _ := s.Checkpoint(context.Background()); cp != 2 {
		t.Fatalf("checkpoint = %d, want 2: a change this build cannot apply must not block the stream", cp)
	}
}

// A saved record's answer reuses its content's JSON from the save
// (AppendRecordJSON); it must be the encoder's bytes of the record, for
// every kind, created and updated, with text the encoder escapes, and for
// a record read back (which carries no encoded content).
func TestAppendRecordJSONMatchesTheEncoder(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	parents := map[wire.Kind]ids.ID{}
	check := func(what string, r Record, reused bool) {
		t.Helper()
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(r); err != nil {
			t.Fatal(err)
		}
		got, err := AppendRecordJSON([]byte("prefix"), r)
		if err != nil || string(got) != "prefix"+want.String() {
			t.Errorf("AppendRecordJSON(%s) = %s, %v; want prefix%s", what, got, err, want.String())
		}
		if (r.encodedContent() != nil) != reused {
			t.Errorf("%s: encoded content kept = %v, want %v", what, r.encodedContent() != nil, reused)
		}
	}
	for i, spec := range records.Kinds {
		r := save(t, s, Edit{Kind: spec.Kind, Content: records.Sample(spec.Kind, i, parents)})
		m := RecordMeta(r)
		parents[spec.Kind] = m.ID
		check(string(spec.Kind)+" created", r, true)
		got, err := s.Get(ctx, spec.Kind, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		check(string(spec.Kind)+" read", got, false)
	}
	p := save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: `<Kim> & "Lee"` + " \u2028 é", Notes: strings.Repeat("n", 900)}})
	check("patient with escaped text", p, true)
	base := RecordMeta(p).Version
	u := save(t, s, Edit{Kind: wire.KindPatient, ID: RecordMeta(p).ID, Base: &base, Content: records.Patient{Name: "Kim", Sex: "F"}})
	check("patient updated", u, true)
	d := save(t, s, Edit{Kind: wire.KindPatient, ID: RecordMeta(p).ID, Delete: true})
	check("patient deleted", d, false)
}
