package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// TestBulkImportBackfillAndEcho runs the batched paths over more rows than
// one bulk statement takes: an import whose items refer to earlier items of
// the same call, a backfill whose marks span several UPDATE … FROM VALUES
// statements, and the cloud's acceptances of it applied in one batch with a
// cloud edit of an echoed record in the middle (which must win: the queued
// sync-column updates may not overwrite it).
func TestBulkImportBackfillAndEcho(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	const studies = 2*(maxParams/2) + 57 // three UPDATEs of the sync marks (two columns a row)
	items := []Import{{Kind: wire.KindPatient, Content: records.Patient{Name: "Bulk Patient"}}}
	got, err := s.Import(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	patient := got[0]
	// One call of many studies, then one of captures naming them (their
	// sort date is their study's, read through the batch's cache).
	var batch []Import
	for i := range studies {
		date := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, i).Format(time.DateOnly)
		batch = append(batch, Import{Kind: wire.KindStudy, Content: records.Study{PatientID: patient, StudyDate: date, Description: fmt.Sprint("s", i)}})
	}
	studyIDs, err := s.Import(ctx, batch)
	if err != nil || len(studyIDs) != studies {
		t.Fatalf("import studies: %d ids, %v", len(studyIDs), err)
	}
	captures, err := s.Import(ctx, []Import{
		{Kind: wire.KindCapture, Content: records.Capture{StudyID: studyIDs[3], Title: "c1"}},
		{Kind: wire.KindCapture, Content: records.Capture{StudyID: studyIDs[3], Title: "c2"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := get(t, s, wire.KindCapture, captures[1]); m.SortDate != "2020-01-04" {
		t.Fatalf("imported capture's sort date %q, want its study's 2020-01-04", m.SortDate)
	}
	const records_ = studies + 3
	var vs int64
	if err := s.db.Model(&Version{}).Count(&vs).Error; err != nil || vs != records_ {
		t.Fatalf("versions kept by the import: %d (%v), want %d", vs, err, records_)
	}
	if m, _ := get(t, s, wire.KindStudy, studyIDs[5]); m.SortDate != "2020-01-06" || m.SyncState != StateExcluded {
		t.Fatalf("imported study meta %+v", m)
	}

	// Backfill everything, in batches bigger than one bulk statement.
	total := 0
	for {
		b, err := s.Backfill(ctx, 500)
		if err != nil {
			t.Fatal(err)
		}
		if b.Records == 0 {
			break
		}
		total += b.Records
	}
	if total != records_ {
		t.Fatalf("backfilled %d records, want %d", total, records_)
	}
	if n, err := s.BackfillRemaining(ctx); err != nil || n != 0 {
		t.Fatalf("remaining after the backfill: %d %v", n, err)
	}
	sent := drain(t, s)
	if len(sent) != records_ {
		t.Fatalf("outbox holds %d changes, want %d", len(sent), records_)
	}
	for _, e := range sent {
		m, _ := get(t, s, e.Kind, e.RecordID)
		if !m.Queued || !m.Backfilled || m.SyncState != StatePending || m.PendingChangeID != e.ChangeID || m.PendingSince == nil {
			t.Fatalf("backfilled %s %s: meta %+v, want queued, pending change %s", e.Kind, e.RecordID, m, e.ChangeID)
		}
	}

	// The cloud accepts them all as sent; in the same batch it also edits
	// one of them after accepting it.
	edited := sent[10]
	if edited.Kind != wire.KindStudy {
		t.Fatalf("sent[10] is a %s", edited.Kind)
	}
	var down []wire.Envelope
	for _, e := range sent {
		a := e
		a.Type, a.Fence = wire.TypeApplied, int64(len(down)%3)
		down = append(down, a)
		if e.RecordID == edited.RecordID {
			var st records.Study
			if err := json.Unmarshal(e.Payload, &st); err != nil {
				t.Fatal(err)
			}
			st.Description = "edited in the cloud"
			b, _ := json.Marshal(st)
			cid, err := s.ids.Next()
			if err != nil {
				t.Fatal(err)
			}
			down = append(down, wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: clinic, Origin: wire.OriginCloud,
				ChangeID: cid, Kind: wire.KindStudy, RecordID: e.RecordID, BaseVersion: e.NewVersion, NewVersion: version.V{A: 2},
				At: time.Now(), Payload: b})
		}
	}
	for i := range down {
		down[i].CloudSeq = int64(i + 1)
	}
	res := applyDown(t, s, down...)
	if res.Applied != len(down) || res.Gap != 0 {
		t.Fatalf("ApplyDown = %+v, want %d applied", res, len(down))
	}
	seqOf := map[ids.ID]int64{}
	for _, e := range down {
		seqOf[e.RecordID] = e.CloudSeq
	}
	for _, e := range sent {
		m, c := get(t, s, e.Kind, e.RecordID)
		if m.SyncState != StateSynced || m.PendingChangeID != 0 || m.PendingSince != nil || m.SyncedAt == nil || m.CloudSeq != seqOf[e.RecordID] {
			t.Fatalf("%s %s after the echo: %+v, want synced at cloud_seq %d", e.Kind, e.RecordID, m, seqOf[e.RecordID])
		}
		if e.RecordID == edited.RecordID {
			if st := c.(records.Study); st.Description != "edited in the cloud" || m.Version != (version.V{A: 2}) || m.Origin != string(wire.OriginCloud) {
				t.Fatalf("the record edited in the cloud: %+v %+v", m, st)
			}
			continue
		}
		if m.Version != e.NewVersion || m.CloudVersion != e.NewVersion || m.Fence != down[m.CloudSeq-1].Fence {
			t.Fatalf("%s %s: version %s cloud %s, want %s", e.Kind, e.RecordID, m.Version, m.CloudVersion, e.NewVersion)
		}
	}
	if cp, err := s.Checkpoint(ctx); err != nil || cp != int64(len(down)) {
		t.Fatalf("checkpoint %d %v, want %d", cp, err, len(down))
	}
}

// TestBackfillPlanRacesAWrite: a backfill batch is read on a snapshot and
// written later; records edited or kept out in between are not sent as the
// snapshot saw them (the batch is done again under the write lock).
func TestBackfillPlanRacesAWrite(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	got, err := s.Import(ctx, []Import{{Kind: wire.KindPatient, Content: records.Patient{Name: "Race Patient"}}})
	if err != nil {
		t.Fatal(err)
	}
	var batch []Import
	for i := range 6 {
		batch = append(batch, Import{Kind: wire.KindStudy, Content: records.Study{PatientID: got[0], StudyDate: fmt.Sprintf("2021-01-0%d", i+1)}})
	}
	studies, err := s.Import(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	edited, keptOut := studies[5], studies[4] // the newest two: in the first batch
	fired := 0
	s.afterBackfillPlan = func() {
		fired++
		if fired > 1 {
			return
		}
		save(t, s, Edit{Kind: wire.KindStudy, ID: edited, Content: records.Study{PatientID: got[0], StudyDate: "2021-01-06", Description: "edited meanwhile"}})
		if _, err := s.SetChoice(ctx, wire.KindStudy, keptOut, ChoiceNever); err != nil {
			t.Error(err)
		}
	}
	b, err := s.Backfill(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if fired != 1 {
		t.Fatalf("the hook ran %d times, want once (the retry writes under the lock)", fired)
	}
	sent := drain(t, s)
	count := map[ids.ID]int{}
	backfilled := 0
	for _, e := range sent {
		count[e.RecordID]++
		if e.RecordID == keptOut {
			t.Errorf("the study kept out meanwhile was sent: %+v", e)
		}
		if e.RecordID == edited {
			var st records.Study
			if err := json.Unmarshal(e.Payload, &st); err != nil || st.Description != "edited meanwhile" {
				t.Errorf("the study edited meanwhile was sent as %s (%v), want its edit", e.Payload, err)
			}
			continue
		}
		backfilled++
	}
	for id, n := range count {
		if n != 1 {
			t.Errorf("record %s sent %d times", id, n)
		}
	}
	// The patient and the four other studies, once each; the edit went live.
	if b.Records != 5 || backfilled != 5 || count[edited] != 1 {
		t.Fatalf("backfill queued %d, outbox %d backfilled + %d of the edited study; want 5, 5, 1", b.Records, backfilled, count[edited])
	}
}

// TestGuardedMarksFindRowsByID: the backfill's guarded UPDATE looks each
// row up by its id. With the guard as plain terms SQLite walked the index
// of sync_state (or the backfill's partial index) for every statement: on
// a million records, a scan per 150 rows.
func TestGuardedMarksFindRowsByID(t *testing.T) {
	s := open(t)
	sc, err := s.scope(s.db)
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range []records.Spec{mustSpec(t, wire.KindStudy), mustSpec(t, wire.KindImage)} {
		u := newBulkUpdate("queued = 1, pending_change_id = v.column2", 3)
		where, args := s.backfillWhere(sc, sp.Kind, sp.Table)
		q := u.statement(sp.Table, 3, sp.Table+".queued = 0 AND "+sp.Table+".version = v.column3 AND "+where)
		vals := []any{int64(1), int64(2), "1.0", int64(3), int64(4), "1.0", int64(5), int64(6), "1.0", int64(clinic)}
		var plan []struct {
			Detail string
		}
		if err := s.db.Raw("EXPLAIN QUERY PLAN "+q, append(vals, args...)...).Scan(&plan).Error; err != nil {
			t.Fatal(err)
		}
		var lines []string
		byID := false
		for _, p := range plan {
			lines = append(lines, p.Detail)
			if strings.HasPrefix(p.Detail, "SEARCH "+sp.Table+" USING INTEGER PRIMARY KEY") {
				byID = true
			}
			if strings.HasPrefix(p.Detail, "SCAN "+sp.Table) || strings.HasPrefix(p.Detail, "SEARCH "+sp.Table+" USING INDEX") {
				t.Errorf("%s: the guarded update walks the table: %s", sp.Table, p.Detail)
			}
		}
		if !byID {
			t.Errorf("%s: the guarded update does not look rows up by id:\n%s", sp.Table, strings.Join(lines, "\n"))
		}
	}
}

func mustSpec(t *testing.T, k wire.Kind) records.Spec {
	t.Helper()
	sp, ok := records.SpecOf(k)
	if !ok {
		t.Fatalf("no spec of %s", k)
	}
	return sp
}

// TestBulkMarksLeaveUndoToTheirTransaction: the bulk updates run as
// UPDATE OR FAIL, so SQLite keeps no statement journal for them (a copy of
// every page they change): a statement stopped by a constraint keeps the
// rows it changed before, and what undoes them is the rollback of the
// transaction (or of the group commit's savepoint) that every caller runs
// them in.
func TestBulkMarksLeaveUndoToTheirTransaction(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	pids, err := s.Import(ctx, []Import{
		{Kind: wire.KindPatient, Content: records.Patient{Name: "A"}},
		{Kind: wire.KindPatient, Content: records.Patient{Name: "B"}},
		{Kind: wire.KindPatient, Content: records.Patient{Name: "C"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	table := mustSpec(t, wire.KindPatient).Table
	pending := func(db *gorm.DB, id ids.ID) int64 {
		t.Helper()
		var v []int64
		if err := db.Table(table).Where("id = ?", id).Pluck("pending_change_id", &v).Error; err != nil || len(v) != 1 {
			t.Fatalf("pending_change_id of %s: %v, %v", id, v, err)
		}
		return v[0]
	}
	var inside int64
	err = s.db.Transaction(func(tx *gorm.DB) error {
		u := newBulkUpdate("pending_change_id = v.column2", 2)
		u.add(table, pids[0], int64(7))
		u.add(table, pids[1], nil) // NOT NULL: the statement stops here
		u.add(table, pids[2], int64(9))
		ferr := u.flush(tx, clinic)
		if ferr == nil {
			t.Fatal("bulk update of a NULL into a NOT NULL column succeeded")
		}
		inside = pending(tx, pids[0])
		return ferr
	})
	if err == nil {
		t.Fatal("transaction committed")
	}
	if inside != 7 {
		t.Errorf("the stopped statement's first row inside its transaction: pending_change_id %d, want 7 (no statement journal undid it)", inside)
	}
	for _, id := range pids {
		if got := pending(s.db, id); got != 0 {
			t.Errorf("after the rollback, pending_change_id of %s = %d, want 0", id, got)
		}
	}

	// In a group commit the write's savepoint is what undoes it (it is
	// not the first of its transaction, which runs without one); the
	// batch's other writes commit.
	var saved, before Record
	batch := []*writeReq{
		saveReq(s, ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "C"}}, &before),
		{ctx: ctx, done: make(chan error, 1), fn: func(tx *gorm.DB) error {
			u := newBulkUpdate("pending_change_id = v.column2", 2)
			u.add(table, pids[0], int64(7))
			u.add(table, pids[1], nil)
			return u.flush(tx, clinic)
		}},
		saveReq(s, ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "D"}}, &saved),
	}
	setCareful(s, true) // the savepoint path (the other: TestGroupCommitIsolatesFailures)
	s.commitBatch(batch)
	if err := <-batch[1].done; err == nil {
		t.Error("the failing write of the group commit: err = nil")
	}
	for _, i := range []int{0, 2} {
		if err := <-batch[i].done; err != nil {
			t.Fatalf("write %d of the group commit: %v", i, err)
		}
	}
	if got := pending(s.db, pids[0]); got != 0 {
		t.Errorf("after the group commit, pending_change_id of %s = %d, want 0", pids[0], got)
	}
	for _, r := range []Record{before, saved} {
		if m, _ := get(t, s, wire.KindPatient, RecordMeta(r).ID); m.SyncState == "" {
			t.Errorf("the group commit's save is missing: %+v", m)
		}
	}
}
