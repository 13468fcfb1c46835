package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// seqIDs mints ids for conflict copies in tests.
type seqIDs struct{ n atomic.Int64 }

func (s *seqIDs) Next() (ids.ID, error) { return ids.ID(9_000_000 + s.n.Add(1)), nil }

func open(t *testing.T) *Store {
	t.Helper()
	return openOn(t, testenv.PostgresDB(t))
}

// openOn opens a store on the database at url, closed when tb ends.
func openOn(tb testing.TB, url string) *Store {
	tb.Helper()
	s, err := Open(context.Background(), url, &seqIDs{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func enroll(t *testing.T, s *Store, id ids.ID, policy string) Clinic {
	t.Helper()
	c, tok, err := s.CreateClinic(context.Background(), id, fmt.Sprintf("clinic %d", id), policy)
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

func changeOf(clinic, changeID, record ids.ID, c records.Content) wire.Envelope {
	b, _ := json.Marshal(c)
	return wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: clinic, Origin: wire.OriginLocal,
		ChangeID: changeID, Kind: c.Kind(), RecordID: record, NewVersion: version.First, At: time.Now(), Payload: b}
}

func applyUp(t *testing.T, s *Store, clinic ids.ID, es ...wire.Envelope) UpResult {
	t.Helper()
	res, err := s.ApplyUp(context.Background(), clinic, es)
	if err != nil {
		t.Fatalf("ApplyUp = %v", err)
	}
	return res
}

func patient(t *testing.T, s *Store, clinic, id ids.ID) (Meta, records.Patient) {
	t.Helper()
	r, err := s.Get(context.Background(), clinic, wire.KindPatient, id)
	if err != nil {
		t.Fatalf("Get(patient %s) = %v", id, err)
	}
	return RecordMeta(r), RecordContent(r).(records.Patient)
}

func feed(t *testing.T, s *Store, clinic ids.ID) []wire.Envelope {
	t.Helper()
	var out []wire.Envelope
	for since := int64(0); ; {
		page, err := s.ChangesSince(context.Background(), clinic, since, 37)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Changes...)
		since = page.Next
		if !page.More {
			return out
		}
	}
}

func TestApplyUpIdempotent(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100, "")
	e := change(100, 1, 500, version.V{}, version.First, "Kim")
	for i, want := range []UpResult{{Accepted: 1}, {Duplicates: 1}, {Duplicates: 1}} {
		got := applyUp(t, s, 100, e)
		if len(got.Changes) != want.Accepted {
			t.Fatalf("delivery %d: %d changes written, want %d", i+1, len(got.Changes), want.Accepted)
		}
		got.Changes = nil
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("delivery %d: ApplyUp = %+v, want %+v", i+1, got, want)
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

func TestApplyUpRejectsBadContentAlone(t *testing.T) {
	s := open(t)
	enroll(t, s, 100, "")
	bad := change(100, 1, 500, version.V{}, version.First, "")
	good := change(100, 2, 501, version.V{}, version.First, "fine")
	res := applyUp(t, s, 100, bad, good)
	if res.Accepted != 1 || len(res.Rejected) != 1 || res.Rejected[0].Change.ChangeID != 1 || !errors.Is(res.Rejected[0].Err, ErrInvalidChange) {
		t.Fatalf("ApplyUp(bad, good) = %+v, want the bad one rejected and the good one accepted", res)
	}
	if _, err := s.ApplyUp(context.Background(), 999, []wire.Envelope{change(999, 1, 500, version.V{}, version.First, "x")}); !errors.Is(err, ErrUnknownClinic) {
		t.Fatalf("ApplyUp(unknown clinic) = %v, want ErrUnknownClinic", err)
	}
	// A change naming another clinic, sent on this clinic's queue, is refused.
	res = applyUp(t, s, 100, change(200, 3, 502, version.V{}, version.First, "x"))
	if len(res.Rejected) != 1 || res.Accepted != 0 {
		t.Fatalf("foreign change: %+v, want rejected", res)
	}
	if n, _ := s.OutboxLen(context.Background()); n != 1 {
		t.Fatalf("outbox = %d, want only the good change", n)
	}
}

// TestSequenceIsDenseUnderConcurrency: many nodes accepting changes of one
// clinic at once still produce cloud_seq 1..N with no gap and no repeat.
func TestSequenceIsDenseUnderConcurrency(t *testing.T) {
	s := open(t)
	enroll(t, s, 100, "")
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.ApplyUp(context.Background(), 100, []wire.Envelope{change(100, ids.ID(1000+i), ids.ID(5000+i), version.V{}, version.First, "p")}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	seqs := feed(t, s, 100)
	if len(seqs) != n {
		t.Fatalf("%d changes, want %d", len(seqs), n)
	}
	for i, e := range seqs {
		if e.CloudSeq != int64(i+1) {
			t.Fatalf("seq[%d] = %d, want %d", i, e.CloudSeq, i+1)
		}
	}
}

func TestClinicIsolation(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	a, b := enroll(t, s, 100, ""), enroll(t, s, 200, "")
	if a.NodeID == b.NodeID || !ids.ValidClinicNode(a.NodeID) || !ids.ValidClinicNode(b.NodeID) {
		t.Fatalf("node ids %d, %d: want distinct clinic node ids", a.NodeID, b.NodeID)
	}
	applyUp(t, s, 100, change(100, 1, 500, version.V{}, version.First, "A's patient"))
	// Clinic B sends a change naming the same record id: it gets its own row.
	applyUp(t, s, 200, change(200, 2, 500, version.V{}, version.First, "B's patient"))
	if _, p := patient(t, s, 100, 500); p.Name != "A's patient" {
		t.Fatalf("A's record = %+v", p)
	}
	v := version.First
	if _, err := s.Save(ctx, 200, Edit{Kind: wire.KindPatient, ID: 999, Base: &v, Content: records.Patient{Name: "x"}, ChangeID: 3}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("B editing a record it does not have: %v, want ErrNotFound", err)
	}
	for _, c := range feed(t, s, 200) {
		if c.Clinic != 200 {
			t.Fatalf("B's feed holds a change of clinic %s", c.Clinic)
		}
	}
}

func TestRelayBatchKeepsUnpublished(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100, "")
	enroll(t, s, 200, "")
	for i := range 3 {
		applyUp(t, s, 100, change(100, ids.ID(10+i), ids.ID(50+i), version.V{}, version.First, "p"))
	}
	for i := range 2 {
		applyUp(t, s, 200, change(200, ids.ID(20+i), ids.ID(60+i), version.V{}, version.First, "p"))
	}
	var got []string
	var mu sync.Mutex // RelayBatch publishes clinics concurrently
	n, err := s.RelayBatch(ctx, 10, func(_ context.Context, b wire.Batch) error {
		if b.Clinic == 200 {
			return errors.New("broker went away")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range b.Changes {
			got = append(got, fmt.Sprintf("%s:%d", b.Clinic, e.CloudSeq))
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("RelayBatch = %d, %v; want clinic 100's 3 changes published in one batch", n, err)
	}
	if left, _ := s.OutboxLen(ctx); left != 2 {
		t.Fatalf("outbox = %d after partial relay, want 2", left)
	}
	var batches int
	if _, err := s.RelayBatch(ctx, 10, func(_ context.Context, b wire.Batch) error {
		batches++
		for _, e := range b.Changes {
			got = append(got, fmt.Sprintf("%s:%d", b.Clinic, e.CloudSeq))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[100:1 100:2 100:3 200:1 200:2]" || batches != 1 {
		t.Fatalf("relayed %v in %d more batches, want each clinic's changes in order, one batch each", got, batches)
	}
}

// TestRelayBatchSendsTheChanges: the relay's one statement (the outbox
// rows locked, each with its change) hands publish the changes as the
// change feed has them, every field, and takes an outbox row whose change
// is missing off the outbox without sending anything for it.
func TestRelayBatchSendsTheChanges(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100, "")
	for i := range 3 {
		e := change(100, ids.ID(10+i), ids.ID(50+i), version.V{}, version.First, fmt.Sprintf("p %d \"q\"", i))
		e.SavedBy, e.SavedByName = 7, "Dr Who"
		applyUp(t, s, 100, e)
	}
	if err := s.db.Create(&Outbox{ClinicID: 100, CloudSeq: 99}).Error; err != nil {
		t.Fatal(err)
	}
	var got []wire.Envelope
	n, err := s.RelayBatch(ctx, 10, func(_ context.Context, b wire.Batch) error {
		got = append(got, b.Changes...)
		return nil
	})
	if err != nil || n != 4 {
		t.Fatalf("RelayBatch = %d, %v; want 4 outbox rows done", n, err)
	}
	want := feed(t, s, 100)
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("relayed %s\nwant the feed's %s", gotJSON, wantJSON)
	}
	if left, _ := s.OutboxLen(ctx); left != 0 {
		t.Fatalf("outbox = %d, want 0", left)
	}
}

// TestConflictPolicies: the cloud edits 1.0 → 2.0 while the clinic edits
// 1.0 → 2.0 too; each policy ends with its documented winner, at a version
// newer than both, and the applied change that goes down says so.
func TestConflictPolicies(t *testing.T) {
	for _, policy := range []string{PolicyLocalWins, PolicyCloudWins, PolicyKeepBoth} {
		t.Run(policy, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			enroll(t, s, 100, policy)
			applyUp(t, s, 100, change(100, 1, 500, version.V{}, version.First, "v1"))
			v := version.First
			if _, err := s.Save(ctx, 100, Edit{Kind: wire.KindPatient, ID: 500, Base: &v, Content: records.Patient{Name: "cloud edit"}, ChangeID: 2}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Save(ctx, 100, Edit{Kind: wire.KindPatient, ID: 500, Base: &v, Content: records.Patient{Name: "stale"}, ChangeID: 3}); !errors.Is(err, ErrVersionConflict) {
				t.Fatalf("stale cloud edit = %v, want ErrVersionConflict", err)
			}
			res := applyUp(t, s, 100, change(100, 4, 500, version.First, version.V{A: 2}, "local edit"))
			if res.Conflicts != 1 {
				t.Fatalf("ApplyUp = %+v, want one conflict", res)
			}
			m, p := patient(t, s, 100, 500)
			want := map[string]string{PolicyLocalWins: "local edit", PolicyCloudWins: "cloud edit", PolicyKeepBoth: "cloud edit"}[policy]
			if p.Name != want || m.Version != (version.V{A: 3}) || m.Conflict != (policy == PolicyKeepBoth) {
				t.Fatalf("record = %+v %+v, want %q at 3.0", m, p, want)
			}
			fs := feed(t, s, 100)
			last := fs[2]
			if last.ChangeID != 4 || last.Conflict != policy || last.NewVersion != (version.V{A: 3}) {
				t.Fatalf("applied change going down = %+v, want the resolution of change 4", last)
			}
			if policy != PolicyKeepBoth {
				if len(fs) != 3 {
					t.Fatalf("feed has %d changes, want 3", len(fs))
				}
				return
			}
			// keep-both: the clinic's content survives as a flagged copy.
			if len(fs) != 4 || fs[3].ConflictOf != 500 || fs[3].Origin != wire.OriginCloud {
				t.Fatalf("feed = %+v, want a conflict copy last", fs)
			}
			cm, cp := patient(t, s, 100, fs[3].RecordID)
			if cp.Name != "local edit" || !cm.Conflict || cm.ConflictOf != 500 {
				t.Fatalf("copy = %+v %+v", cm, cp)
			}
			flagged, _ := s.List(ctx, 100, wire.KindPatient, ListQuery{ConflictOnly: true})
			if len(flagged) != 2 {
				t.Fatalf("%d flagged records, want 2 (original and copy)", len(flagged))
			}
		})
	}
}

// TestEditRacingDeleteIsAConflict: the cloud deletes while the clinic edits.
func TestEditRacingDeleteIsAConflict(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100, PolicyLocalWins)
	applyUp(t, s, 100, change(100, 1, 500, version.V{}, version.First, "v1"))
	if _, err := s.Save(ctx, 100, Edit{Kind: wire.KindPatient, ID: 500, Delete: true, ChangeID: 2}); err != nil {
		t.Fatal(err)
	}
	if res := applyUp(t, s, 100, change(100, 3, 500, version.First, version.V{A: 2}, "edited")); res.Conflicts != 1 {
		t.Fatalf("ApplyUp = %+v, want a conflict", res)
	}
	m, p := patient(t, s, 100, 500)
	if m.Deleted || p.Name != "edited" {
		t.Fatalf("record = %+v %+v, want the clinic's edit to win over the delete (local-wins)", m, p)
	}
}

// TestOwnChainIsNoConflict: the clinic edits again before the acceptance of
// its previous edit comes back; building on its own accepted change is no
// conflict, even when the cloud renumbered the version.
func TestOwnChainIsNoConflict(t *testing.T) {
	s := open(t)
	enroll(t, s, 100, PolicyKeepBoth)
	applyUp(t, s, 100, change(100, 1, 500, version.V{}, version.First, "v1"))
	res := applyUp(t, s, 100,
		change(100, 2, 500, version.First, version.V{A: 2}, "v2"),
		change(100, 3, 500, version.V{A: 2}, version.V{A: 3}, "v3"))
	if res.Conflicts != 0 || res.Accepted != 2 {
		t.Fatalf("ApplyUp = %+v, want two plain acceptances", res)
	}
	if _, p := patient(t, s, 100, 500); p.Name != "v3" {
		t.Fatalf("record = %+v", p)
	}
}

// TestChildrenWaitForParents: a study arriving before its patient is parked
// and applied the moment the patient arrives (M26); later changes of the
// parked record wait behind it.
func TestChildrenWaitForParents(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100, "")
	study := changeOf(100, 11, 700, records.Sample(wire.KindStudy, 1, map[wire.Kind]ids.ID{wire.KindPatient: 600}))
	edit := study
	edit.ChangeID, edit.BaseVersion, edit.NewVersion = 12, version.First, version.V{A: 2}
	image := changeOf(100, 13, 800, records.Sample(wire.KindImage, 1, map[wire.Kind]ids.ID{wire.KindStudy: 700}))
	res := applyUp(t, s, 100, study, edit, image)
	if res.Parked != 3 || res.Accepted != 0 {
		t.Fatalf("ApplyUp(children first) = %+v, want 3 parked", res)
	}
	if n, _ := s.ParkedCount(ctx, 100); n != 3 {
		t.Fatalf("ParkedCount = %d, want 3", n)
	}
	// Redelivery of a parked change is a duplicate, not a second parking.
	if res := applyUp(t, s, 100, study); res.Duplicates != 1 {
		t.Fatalf("redelivered parked change: %+v", res)
	}
	res = applyUp(t, s, 100, changeOf(100, 10, 600, records.Sample(wire.KindPatient, 1, nil)))
	if res.Accepted != 4 || res.Unparked != 3 {
		t.Fatalf("ApplyUp(parent) = %+v, want the parent and its 3 waiting changes accepted", res)
	}
	var order []string
	for _, e := range feed(t, s, 100) {
		order = append(order, fmt.Sprintf("%s/%s@%s", e.Kind, e.RecordID, e.NewVersion))
	}
	if fmt.Sprint(order) != "[patient/600@1.0 study/700@1.0 image/800@1.0 study/700@2.0]" {
		t.Fatalf("cloud_seq order = %v, want each parent before its children and each record's changes in order", order)
	}
	if n, _ := s.ParkedCount(ctx, 100); n != 0 {
		t.Fatalf("ParkedCount = %d after the parent arrived, want 0", n)
	}
}

func TestCloudSaveChecksReferences(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100, "")
	_, err := s.Save(ctx, 100, Edit{Kind: wire.KindStudy, ID: 1, Create: true, ChangeID: 1,
		Content: records.Sample(wire.KindStudy, 1, map[wire.Kind]ids.ID{wire.KindPatient: 77})})
	if !errors.Is(err, ErrMissingRef) {
		t.Fatalf("cloud study of an unknown patient: %v, want ErrMissingRef", err)
	}
	parents := map[wire.Kind]ids.ID{}
	for i, spec := range records.Kinds {
		id := ids.ID(100 + i)
		r, err := s.Save(ctx, 100, Edit{Kind: spec.Kind, ID: id, Create: true, ChangeID: id, Content: records.Sample(spec.Kind, i, parents)})
		if err != nil {
			t.Fatalf("create %s: %v", spec.Kind, err)
		}
		parents[spec.Kind] = id
		if m := RecordMeta(r); m.Version != version.First || m.Origin != "cloud" || m.Kind != spec.Kind {
			t.Fatalf("created %s = %+v", spec.Kind, m)
		}
	}
	d, err := s.Digest(ctx, 100)
	if err != nil || len(d) != len(records.Kinds) {
		t.Fatalf("Digest = %d entries, %v", len(d), err)
	}
}

func TestEnrollmentIsOneTime(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	_, tok, err := s.CreateEnrollment(ctx, "Seoul Smile", PolicyKeepBoth, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, clinicTok, err := s.Enroll(ctx, tok, 777, nil)
	if err != nil || c.ID != 777 || c.Name != "Seoul Smile" || c.ConflictPolicy != PolicyKeepBoth || !ids.ValidClinicNode(c.NodeID) {
		t.Fatalf("Enroll = %+v, %v", c, err)
	}
	if got, err := s.ClinicByToken(ctx, clinicTok); err != nil || got.ID != 777 {
		t.Fatalf("the enrolled clinic's token does not work: %+v, %v", got, err)
	}
	if _, _, err := s.Enroll(ctx, tok, 778, nil); !errors.Is(err, ErrEnrollment) {
		t.Fatalf("second use = %v, want ErrEnrollment", err)
	}
	_, expired, _ := s.CreateEnrollment(ctx, "Late", "", -time.Minute)
	if _, _, err := s.Enroll(ctx, expired, 779, nil); !errors.Is(err, ErrEnrollment) {
		t.Fatalf("expired token = %v, want ErrEnrollment", err)
	}
	if _, _, err := s.Enroll(ctx, "sce_made_up", 780, nil); !errors.Is(err, ErrEnrollment) {
		t.Fatalf("unknown token = %v, want ErrEnrollment", err)
	}
}
