package store

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// drain takes every outbox row (as the relay would after the broker's
// confirm) and returns their envelopes in relay order.
func drain(t *testing.T, s *Store) []wire.Envelope {
	t.Helper()
	rows, err := s.NextOutbox(context.Background(), 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.Envelope
	var idsDone []int64
	for _, r := range rows {
		var e wire.Envelope
		if err := json.Unmarshal([]byte(r.Envelope), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
		idsDone = append(idsDone, r.ID)
	}
	if err := s.DeleteOutbox(context.Background(), idsDone...); err != nil {
		t.Fatal(err)
	}
	return out
}

func studyDate(t *testing.T, e wire.Envelope) string {
	t.Helper()
	switch e.Kind {
	case wire.KindStudy:
		var c records.Study
		_ = json.Unmarshal(e.Payload, &c)
		return c.StudyDate
	case wire.KindImage:
		var c records.Image
		_ = json.Unmarshal(e.Payload, &c)
		return c.StudyDate
	}
	return "9999-12-31"
}

// TestScopeAndBackfill (M4, M8): records outside the scope stay here as
// excluded; widening the scope backfills them newest first, parents before
// children, behind live changes, and resumes where it stopped.
func TestScopeAndBackfill(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if err := s.SetScope(ctx, Scope{Since: "2026-01-01", Modalities: []string{"CBCT", "PANO"}}); err != nil {
		t.Fatal(err)
	}
	p := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Han"}}))
	var studies []ids.ID
	for i := range 28 { // one study a quarter, 2020-2026
		date := fmt.Sprintf("%d-%02d-15", 2020+i/4, 1+3*(i%4))
		st := RecordMeta(save(t, s, Edit{Kind: wire.KindStudy, Content: records.Study{PatientID: p.ID, StudyDate: date}}))
		studies = append(studies, st.ID)
		for _, mod := range []string{"CBCT", "PHOTO"} {
			save(t, s, Edit{Kind: wire.KindImage, Content: records.Image{StudyID: st.ID, Modality: mod, StudyDate: date}})
		}
	}
	live := drain(t, s)
	// In scope: the patient, the 4 studies of 2026 and their CBCT images.
	if len(live) != 1+4+4 {
		t.Fatalf("%d changes queued live, want 9 (patient, 2026 studies, their CBCT images)", len(live))
	}
	old, _ := s.Get(ctx, wire.KindStudy, studies[0])
	if RecordMeta(old).SyncState != StateExcluded {
		t.Fatalf("a 2020 study is %s, want excluded", RecordMeta(old).SyncState)
	}
	// The user keeps one old study out for good.
	if _, err := s.SetChoice(ctx, wire.KindStudy, studies[1], ChoiceNever); err != nil {
		t.Fatal(err)
	}

	if err := s.SetScope(ctx, Scope{}); err != nil { // widen to everything
		t.Fatal(err)
	}
	n, err := s.BackfillRemaining(ctx)
	// 24 old studies (one never) + their 48 images (2 of them follow the
	// study kept out) + the 4 PHOTO images of 2026.
	if err != nil || n != 23+46+4 {
		t.Fatalf("BackfillRemaining = %d, %v; want 73", n, err)
	}
	var sent []wire.Envelope
	for i := 0; ; i++ {
		b, err := s.Backfill(ctx, 7)
		if err != nil {
			t.Fatal(err)
		}
		if b.Records == 0 {
			break
		}
		if i == 2 {
			// A live change made meanwhile goes before the backfill.
			save(t, s, Edit{Kind: wire.KindPatient, ID: p.ID, Content: records.Patient{Name: "Han Jiwoo"}})
			rows, _ := s.NextOutbox(ctx, 1)
			if len(rows) != 1 || rows[0].Lane != LaneLive {
				t.Fatalf("first outbox row = %+v, want the live change", rows)
			}
		}
		sent = append(sent, drain(t, s)...)
	}
	seen := map[ids.ID]bool{p.ID: true}
	last := "9999-99-99"
	backfilled := 0
	for _, e := range sent {
		if e.Kind == wire.KindPatient {
			continue // the live edit
		}
		backfilled++
		if e.BaseVersion.String() != "0.0" {
			t.Errorf("backfilled %s %s has base %s, want 0.0 (the cloud never had it)", e.Kind, e.RecordID, e.BaseVersion)
		}
		d := studyDate(t, e)
		if d > last {
			t.Errorf("backfill went from %s back up to %s: not newest first", last, d)
		}
		last = d
		if e.Kind == wire.KindImage {
			var c records.Image
			_ = json.Unmarshal(e.Payload, &c)
			if !seen[c.StudyID] && !contains(studies[24:], c.StudyID) {
				t.Errorf("image %s sent before its study %s", e.RecordID, c.StudyID)
			}
		}
		if e.RecordID == studies[1] {
			t.Errorf("the study the user keeps out was backfilled")
		}
		seen[e.RecordID] = true
	}
	if backfilled != 73 {
		t.Fatalf("backfilled %d records, want 73", backfilled)
	}
	if n, _ := s.BackfillRemaining(ctx); n != 0 {
		t.Fatalf("BackfillRemaining after = %d, want 0", n)
	}
}

func contains(l []ids.ID, id ids.ID) bool {
	for _, x := range l {
		if x == id {
			return true
		}
	}
	return false
}

// TestEditDuringBackfillKeepsOrder: a record edited while its backfill row
// still waits gets that row moved to the live lane, ahead of the edit.
func TestEditDuringBackfillKeepsOrder(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	_ = s.SetScope(ctx, Scope{Kinds: []wire.Kind{wire.KindDoctor}})
	p := RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Out"}}))
	if p.SyncState != StateExcluded {
		t.Fatalf("patient outside the scope is %s", p.SyncState)
	}
	// Excluded and edited: still nothing for the cloud.
	save(t, s, Edit{Kind: wire.KindPatient, ID: p.ID, Content: records.Patient{Name: "Out 2"}})
	if rows := drain(t, s); len(rows) != 0 {
		t.Fatalf("%d changes queued for an excluded record", len(rows))
	}
	_ = s.SetScope(ctx, Scope{})
	if b, err := s.Backfill(ctx, 10); err != nil || b.Records != 1 {
		t.Fatalf("Backfill = %+v, %v", b, err)
	}
	save(t, s, Edit{Kind: wire.KindPatient, ID: p.ID, Content: records.Patient{Name: "Out 3"}})
	es := drain(t, s)
	if len(es) != 2 || es[0].BaseVersion.String() != "0.0" || es[1].BaseVersion != es[0].NewVersion {
		t.Fatalf("relay order = %+v, want the backfilled state (from 0.0) then the edit on top of it", es)
	}
}

// TestScopeChangeReachesTheNextSave changes the scope between saves: the
// store keeps the scope in memory once a save read it, and the next save
// must still follow the new one.
func TestScopeChangeReachesTheNextSave(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	state := func(name string) string {
		t.Helper()
		return RecordMeta(save(t, s, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: name}})).SyncState
	}
	if st := state("before"); st != StatePending {
		t.Fatalf("under the whole scope: %s, want pending", st)
	}
	if err := s.SetScope(ctx, Scope{Kinds: []wire.Kind{wire.KindStudy}}); err != nil {
		t.Fatal(err)
	}
	if st := state("narrowed"); st != StateExcluded {
		t.Fatalf("after the scope left patients out: %s, want excluded", st)
	}
	if err := s.SetScope(ctx, Scope{}); err != nil {
		t.Fatal(err)
	}
	if st := state("widened"); st != StatePending {
		t.Fatalf("after the scope took patients back: %s, want pending", st)
	}
}
