package store

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// pipelineHistory imports, outside the scope, two patients, six studies
// dated 2020-01-06 (S1) down to 2020-01-01 (S6) of the two in turn, and an
// image of S3 (its date, a larger id: it sorts before S3), then widens the
// scope to studies and images, so the patients go only as parents. It
// returns the patients, the studies and the image.
func pipelineHistory(t *testing.T, s *Store) (pats, studies []ids.ID, image ids.ID) {
	t.Helper()
	ctx := context.Background()
	if err := s.SetScope(ctx, Scope{Kinds: []wire.Kind{wire.KindSetting}}); err != nil {
		t.Fatal(err)
	}
	pats, err := s.Import(ctx, []Import{{Kind: wire.KindPatient, Content: records.Patient{Name: "P1"}}, {Kind: wire.KindPatient, Content: records.Patient{Name: "P2"}}})
	if err != nil {
		t.Fatal(err)
	}
	var items []Import
	for i := range 6 {
		items = append(items, Import{Kind: wire.KindStudy, Content: records.Study{PatientID: pats[i%2], StudyDate: fmt.Sprintf("2020-01-%02d", 6-i), Description: fmt.Sprint("S", i+1)}})
	}
	if studies, err = s.Import(ctx, items); err != nil {
		t.Fatal(err)
	}
	got, err := s.Import(ctx, []Import{{Kind: wire.KindImage, Content: records.Image{StudyID: studies[2], StudyDate: "2020-01-04", Modality: "PANO"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetScope(ctx, Scope{Kinds: []wire.Kind{wire.KindStudy, wire.KindImage}}); err != nil {
		t.Fatal(err)
	}
	return pats, studies, got[0]
}

// TestBackfillPipelinedBatches: a batch planned while the one before it is
// still unwritten (as the backfill loop reads the next batch during a
// write) starts after that one's last candidate and takes that one's
// records for queued, also the parents it queues: each record is queued
// once, parents first, candidates newest first, and the chain ends with an
// empty plan.
func TestBackfillPipelinedBatches(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	pats, studies, image := pipelineHistory(t, s)
	// Candidates newest first: S1, S2, the image, S3, S4, S5, S6. With 3
	// a batch, the first takes S1, S2 and the image, and with them P1, P2
	// and S3 as parents; S3 sorts after the first batch's last candidate,
	// so the second batch, read before the first is written, sees it as a
	// candidate and must leave it.
	plan, err := s.PlanBackfill(ctx, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for plan.Records() > 0 {
		next, err := s.PlanBackfill(ctx, 3, plan) // before plan is written
		if err != nil {
			t.Fatal(err)
		}
		b, exact, err := s.CommitBackfill(ctx, plan)
		if err != nil || !exact || b.Records != plan.Records() {
			t.Fatalf("CommitBackfill = %+v, exact %v, %v; want the %d records planned, exact", b, exact, err, plan.Records())
		}
		sizes = append(sizes, b.Records)
		plan = next
	}
	if fmt.Sprint(sizes) != "[6 3]" {
		t.Fatalf("batches of %v records, want [6 3]: P1 S1 P2 S2 S3 image, then S4 S5 S6 and nothing else", sizes)
	}
	if again, err := s.PlanBackfill(ctx, 3, nil); err != nil || again.Records() != 0 {
		t.Fatalf("a fresh plan after the chain: %d records, %v; want none", again.Records(), err)
	}
	if n, err := s.BackfillRemaining(ctx); err != nil || n != 0 {
		t.Fatalf("BackfillRemaining = %d, %v; want 0", n, err)
	}
	sent := drain(t, s)
	var order []string
	name := map[ids.ID]string{pats[0]: "P1", pats[1]: "P2", image: "I3"}
	for i, id := range studies {
		name[id] = fmt.Sprint("S", i+1)
	}
	seen := map[ids.ID]bool{}
	for _, e := range sent {
		if seen[e.RecordID] {
			t.Errorf("%s queued twice", name[e.RecordID])
		}
		seen[e.RecordID] = true
		order = append(order, name[e.RecordID])
		m, _ := get(t, s, e.Kind, e.RecordID)
		if !m.Queued || m.PendingChangeID != e.ChangeID {
			t.Errorf("%s: queued %v, pending change %s; want queued with %s", name[e.RecordID], m.Queued, m.PendingChangeID, e.ChangeID)
		}
	}
	if got, want := strings.Join(order, " "), "P1 S1 P2 S2 S3 I3 S4 S5 S6"; got != want {
		t.Fatalf("relay order %s, want %s (parents first, then newest first)", got, want)
	}
}

// TestBackfillPlanAfterVoid: a plan read after another is empty when the
// scope changed in between (what the change newly covers may sort before
// the other's last), and a batch whose records changed before its write is
// written again under the lock and reported as not exact, so that the plan
// read after it is not written (it took the first's records for queued).
func TestBackfillPlanAfterVoid(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	pats, studies, _ := pipelineHistory(t, s)
	first, err := s.PlanBackfill(ctx, 3, nil)
	if err != nil || first.Records() != 6 {
		t.Fatalf("first plan: %d records, %v; want 6", first.Records(), err)
	}
	if err := s.SetScope(ctx, Scope{}); err != nil {
		t.Fatal(err)
	}
	if after, err := s.PlanBackfill(ctx, 3, first); err != nil || after.Records() != 0 {
		t.Fatalf("plan after, the scope changed: %d records, %v; want none", after.Records(), err)
	}
	if err := s.SetScope(ctx, Scope{Kinds: []wire.Kind{wire.KindStudy, wire.KindImage}}); err != nil {
		t.Fatal(err)
	}
	// S2 edited between the first plan's read and its write.
	save(t, s, Edit{Kind: wire.KindStudy, ID: studies[1], Content: records.Study{PatientID: pats[1], StudyDate: "2020-01-05", Description: "edited"}})
	b, exact, err := s.CommitBackfill(ctx, first)
	if err != nil || exact {
		t.Fatalf("CommitBackfill of a raced plan: %+v, exact %v, %v; want written again, not exact", b, exact, err)
	}
	seen := map[ids.ID]int{}
	for _, e := range drain(t, s) {
		seen[e.RecordID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("record %s queued %d times", id, n)
		}
	}
}

// TestBackfillPlanAfterUsesTheIndex: the candidates after a plan's last
// are a range of the backfill's partial index, not a scan of it.
func TestBackfillPlanAfterUsesTheIndex(t *testing.T) {
	s := open(t)
	sp := mustSpec(t, wire.KindStudy)
	sc, err := s.scope(s.db)
	if err != nil {
		t.Fatal(err)
	}
	where, args := s.backfillWhere(sc, sp.Kind, sp.Table)
	q := "SELECT id FROM studies INDEXED BY studies_backfill WHERE studies.queued = 0 AND (studies.sort_date, studies.id) < (?, ?) AND " +
		where + " ORDER BY studies.sort_date DESC, studies.id DESC LIMIT 10"
	got := explain(t, s.db, q, append([]any{"2020-01-01", 5}, args...))
	if !strings.Contains(got, "SEARCH studies USING INDEX studies_backfill (") || strings.Contains(got, "TEMP B-TREE") {
		t.Fatalf("query plan %q: want a range search of studies_backfill, no sort", got)
	}
}
