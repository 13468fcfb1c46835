package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// commitBatch runs reqs as one group commit, as the committer runs the
// writes it gathers, and answers each write.
func (s *Store) commitBatch(reqs []*writeReq) {
	b := s.gc.newBatch(s)
	for _, r := range reqs {
		b.run(r)
	}
	b.commit()
}

// saveReq is a write of batch that saves ed, its record in *out.
func saveReq(s *Store, ctx context.Context, ed Edit, out *Record) *writeReq {
	k, _ := opsFor(ed.Kind)
	return &writeReq{ctx: ctx, done: make(chan error, 1), fn: func(tx *gorm.DB) error {
		var err error
		*out, err = s.saveTx(ctx, tx, k, ed)
		return err
	}}
}

func patientIDs(t *testing.T, s *Store) map[ids.ID]string {
	t.Helper()
	var rows []Row[records.Patient]
	if err := s.db.Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[ids.ID]string{}
	for _, r := range rows {
		out[r.ID] = r.Data.Name
	}
	return out
}

// TestGroupCommitIsolatesFailures runs one batch of writes where some fail
// (a save refused by the rules, a write that fails after writing, a panic,
// a caller gone before its turn): the others commit, each failed one left
// nothing behind, and every write got its own answer; in a careful batch
// (savepoints) and in one without savepoints, which gives its transaction
// up at the first failure.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	for _, careful := range []bool{true, false} {
		t.Run(map[bool]string{true: "careful", false: "optimistic"}[careful], func(t *testing.T) {
			testGroupCommitIsolatesFailures(t, careful)
		})
	}
}

// setCareful makes s's next batch careful or not (before its first write).
func setCareful(s *Store, careful bool) {
	s.gc.careful = map[bool]int{true: 1}[careful]
}

func testGroupCommitIsolatesFailures(t *testing.T, careful bool) {
	s := open(t)
	setCareful(s, careful)
	ctx := context.Background()
	gone, cancel := context.WithCancel(ctx)
	cancel()
	var a, b, missing, late Record
	errBoom := errors.New("boom")
	batch := []*writeReq{
		saveReq(s, ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "A"}}, &a),
		saveReq(s, ctx, Edit{Kind: wire.KindPatient, ID: 12345, Content: records.Patient{Name: "nobody"}}, &missing),
		{ctx: ctx, done: make(chan error, 1), fn: func(tx *gorm.DB) error {
			if _, err := s.saveTx(ctx, tx, kinds[wire.KindPatient], Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "half"}}); err != nil {
				return err
			}
			return errBoom // after writing its record and outbox row
		}},
		{ctx: ctx, done: make(chan error, 1), fn: func(tx *gorm.DB) error {
			if _, err := s.saveTx(ctx, tx, kinds[wire.KindPatient], Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "panicked"}}); err != nil {
				return err
			}
			panic("a bug in one write")
		}},
		saveReq(s, gone, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "late"}}, &late),
		saveReq(s, ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "B"}}, &b),
	}
	s.commitBatch(batch)
	errs := make([]error, len(batch))
	for i, r := range batch {
		errs[i] = <-r.done
	}
	if errs[0] != nil || errs[5] != nil {
		t.Fatalf("the good writes: errors %v, %v; want none", errs[0], errs[5])
	}
	if !errors.Is(errs[1], ErrNotFound) {
		t.Errorf("update of a missing record: err = %v, want ErrNotFound", errs[1])
	}
	if !errors.Is(errs[2], errBoom) {
		t.Errorf("failing write: err = %v, want %v", errs[2], errBoom)
	}
	if errs[3] == nil {
		t.Errorf("panicking write: err = nil, want an error")
	}
	if !errors.Is(errs[4], context.Canceled) {
		t.Errorf("write whose caller left: err = %v, want context.Canceled", errs[4])
	}
	got := patientIDs(t, s)
	want := map[ids.ID]string{RecordMeta(a).ID: "A", RecordMeta(b).ID: "B"}
	if len(got) != len(want) || got[RecordMeta(a).ID] != "A" || got[RecordMeta(b).ID] != "B" {
		t.Fatalf("patients after the batch = %v, want %v", got, want)
	}
	if ob := outbox(t, s); len(ob) != 2 {
		t.Fatalf("outbox after the batch: %d rows, want 2 (one per committed save)", len(ob))
	}
	if c, w := s.GroupCommits(); c != 1 || w != int64(len(batch)) {
		t.Errorf("GroupCommits() = %d, %d; want 1, %d", c, w, len(batch))
	}
}

// TestGroupCommitFallsBackAlone: when the batch's transaction is lost as a
// whole (as SQLite rolls back a transaction on some errors), the writes
// that had not failed run again, each alone, and each commits exactly once.
func TestGroupCommitFallsBackAlone(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	var a, b Record
	errLost := errors.New("lost the transaction")
	batch := []*writeReq{
		saveReq(s, ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "A"}}, &a),
		{ctx: ctx, done: make(chan error, 1), fn: func(tx *gorm.DB) error {
			if err := tx.Exec("ROLLBACK").Error; err != nil {
				return err
			}
			return errLost
		}},
		saveReq(s, ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "B"}}, &b),
	}
	setCareful(s, true) // the savepoint that cannot be rolled back (without savepoints: giveUp, TestGroupCommitIsolatesFailures)
	s.commitBatch(batch)
	for i, r := range batch {
		err := <-r.done
		if (i == 1) != (err != nil) {
			t.Errorf("write %d: err = %v", i, err)
		}
	}
	got := patientIDs(t, s)
	if len(got) != 2 || got[RecordMeta(a).ID] != "A" || got[RecordMeta(b).ID] != "B" {
		t.Fatalf("patients = %v, want A and B once each", got)
	}
	if ob := outbox(t, s); len(ob) != 2 {
		t.Fatalf("outbox: %d rows, want 2", len(ob))
	}
}

// TestGroupCommitBatchesConcurrentSaves: many concurrent saves all commit,
// each exactly once, in fewer commits than saves.
func TestGroupCommitBatchesConcurrentSaves(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	const writers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				_, err := s.Save(ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "p"}})
				if err != nil {
					errs <- err
				}
				if i%5 == 0 { // a refused save among them
					_, err := s.Save(ctx, Edit{Kind: wire.KindPatient, ID: ids.ID(1000 + w), Content: records.Patient{Name: "x"}})
					if !errors.Is(err, ErrNotFound) {
						errs <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent save: %v", err)
	}
	if n := len(patientIDs(t, s)); n != writers*each {
		t.Fatalf("patients = %d, want %d", n, writers*each)
	}
	if n := len(outbox(t, s)); n != writers*each {
		t.Fatalf("outbox rows = %d, want %d", n, writers*each)
	}
	commits, writes := s.GroupCommits()
	t.Logf("%d writes in %d commits", writes, commits)
	if commits >= writes {
		t.Errorf("GroupCommits() = %d commits for %d writes; want fewer commits than writes", commits, writes)
	}
}

// TestGroupCommitImportBesideSaves: an import (a write that commits alone)
// arriving among concurrent saves commits whole, and so do the saves.
func TestGroupCommitImportBesideSaves(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := s.Save(ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "saved"}}); err != nil {
					errs <- err
				}
			}
		}()
	}
	items := make([]Import, 500)
	for i := range items {
		items[i] = Import{Kind: wire.KindPatient, Content: records.Patient{Name: "imported"}}
	}
	got, err := s.Import(ctx, items)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("save beside an import: %v", err)
	}
	if err != nil || len(got) != len(items) {
		t.Fatalf("Import() = %d ids, %v; want %d, nil", len(got), err, len(items))
	}
	names := map[string]int{}
	for _, n := range patientIDs(t, s) {
		names[n]++
	}
	if names["saved"] != 80 || names["imported"] != 500 {
		t.Fatalf("patients by name = %v, want 80 saved and 500 imported", names)
	}
}

// gathering sets s's committer to gather batches of want writes, waiting
// for them as long as a test may take (no linger ends a batch early).
func gathering(s *Store, want int) {
	s.gc.recent = [4]int{want}
	s.gc.linger = time.Hour
}

// submitted is a write sent to the committer from its own goroutine, as a
// request's: ran is signalled each time its fn runs, done gives its answer.
type submitted struct {
	ran  chan struct{}
	done chan error
}

func submit(s *Store, fn func(tx *gorm.DB) error) submitted {
	w := submitted{ran: make(chan struct{}, 2), done: make(chan error, 1)}
	go func() {
		w.done <- s.write(context.Background(), func(tx *gorm.DB) error {
			err := fn(tx)
			w.ran <- struct{}{}
			return err
		})
	}()
	return w
}

// patientNames counts the committed patients by name.
func patientNames(t *testing.T, s *Store) map[string]int {
	t.Helper()
	names := map[string]int{}
	for _, n := range patientIDs(t, s) {
		names[n]++
	}
	return names
}

// savePatient is a write that saves a patient named name, then returns fail.
func savePatient(s *Store, name string, fail error) func(tx *gorm.DB) error {
	return func(tx *gorm.DB) error {
		if _, err := s.saveTx(context.Background(), tx, kinds[wire.KindPatient], Edit{Kind: wire.KindPatient, Content: records.Patient{Name: name}}); err != nil {
			return err
		}
		return fail // after writing its record and outbox row
	}
}

// counted is a write that saves a patient named name and returns fail,
// counting its runs in *runs.
func counted(s *Store, name string, fail error, runs *int) *writeReq {
	save := savePatient(s, name, fail)
	return &writeReq{ctx: context.Background(), done: make(chan error, 1), fn: func(tx *gorm.DB) error {
		*runs++
		return save(tx)
	}}
}

// checkOneCommitOfAB checks a batch of three writes (patients A and B
// and one that fails) after commitBatch: each write's answer is want's,
// A and B are saved once each with an outbox row, in one group commit.
func checkOneCommitOfAB(t *testing.T, s *Store, batch []*writeReq, want []error) {
	t.Helper()
	for i, w := range want {
		if err := <-batch[i].done; !errors.Is(err, w) {
			t.Errorf("write %d: err = %v, want %v", i, err, w)
		}
	}
	if names := patientNames(t, s); len(names) != 2 || names["A"] != 1 || names["B"] != 1 {
		t.Fatalf("patients by name = %v, want A and B once each", names)
	}
	if ob := outbox(t, s); len(ob) != 2 {
		t.Fatalf("outbox: %d rows, want 2 (one per committed save)", len(ob))
	}
	if c, w := s.GroupCommits(); c != 1 || w != 3 {
		t.Errorf("GroupCommits() = %d, %d; want 1, 3", c, w)
	}
}

// TestGroupCommitFailureWithoutSavepoints: a write that fails after
// writing fails alone. In a careful batch it rolls back to its savepoint;
// in one without savepoints it gives up the transaction: the write before
// it runs again under a savepoint (and it does not), and the next batches
// are careful. One commit holds the others either way.
func TestGroupCommitFailureWithoutSavepoints(t *testing.T) {
	for _, careful := range []bool{true, false} {
		t.Run(map[bool]string{true: "careful", false: "optimistic"}[careful], func(t *testing.T) {
			s := open(t)
			setCareful(s, careful)
			errBoom := errors.New("boom")
			var runs [3]int
			batch := []*writeReq{
				counted(s, "A", nil, &runs[0]),
				counted(s, "half", errBoom, &runs[1]),
				counted(s, "B", nil, &runs[2]),
			}
			s.commitBatch(batch)
			checkOneCommitOfAB(t, s, batch, []error{nil, errBoom, nil})
			want := [3]int{1, 1, 1}
			if !careful {
				want[0] = 2 // again, after the failing write gave up the transaction
			}
			if runs != want {
				t.Errorf("runs of the writes = %v, want %v", runs, want)
			}
			if !careful && s.gc.careful != carefulBatches {
				t.Errorf("after a write failed in a batch without savepoints, %d careful batches to come, want %d", s.gc.careful, carefulBatches)
			}
		})
	}
}

// TestGroupCommitFirstWriteFailsAlone: the first write of a batch runs
// without a savepoint; when it fails after writing, its transaction is
// rolled back whole and the writes after it commit in another, in the
// same batch.
func TestGroupCommitFirstWriteFailsAlone(t *testing.T) {
	s := open(t)
	errBoom := errors.New("boom")
	var runs [3]int
	batch := []*writeReq{
		counted(s, "half", errBoom, &runs[0]),
		counted(s, "A", nil, &runs[1]),
		counted(s, "B", nil, &runs[2]),
	}
	s.commitBatch(batch)
	checkOneCommitOfAB(t, s, batch, []error{errBoom, nil, nil})
	if runs != [3]int{1, 1, 1} {
		t.Errorf("runs of the writes = %v, want each once", runs)
	}
}

// TestGroupCommitLoneWriterDoesNotWait: with recent batches of one, a
// write is committed and answered without waiting for company.
func TestGroupCommitLoneWriterDoesNotWait(t *testing.T) {
	s := open(t)
	gathering(s, 1)
	a := submit(s, savePatient(s, "A", nil))
	select {
	case err := <-a.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a lone write waited for company")
	}
}
