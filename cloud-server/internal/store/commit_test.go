package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// holdClinic locks clinic's row in a transaction of its own (as another
// node's batch would) until the returned func is called.
func holdClinic(t *testing.T, s *Store, clinic ids.ID) (release func()) {
	t.Helper()
	locked := make(chan error, 1)
	end := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.db.Transaction(func(tx *gorm.DB) error {
			var c Clinic
			err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Take(&c, "id = ?", clinic).Error
			locked <- err
			if err != nil {
				return err
			}
			<-end
			return nil
		})
	}()
	if err := <-locked; err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { close(end); <-done }) }
	t.Cleanup(release)
	return release
}

// waitQueued waits until n saves of clinic are in a batch or waiting.
func waitQueued(t *testing.T, s *Store, clinic ids.ID, n int64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		s.gc.mu.Lock()
		got := s.gc.saves + int64(len(s.gc.lanes[clinic]))
		s.gc.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d saves queued, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkDense checks that clinic's change log is cloud_seq 1..n, in order
// of acceptance, with an outbox row each.
func checkDense(t *testing.T, s *Store, clinic ids.ID, n int) []wire.Envelope {
	t.Helper()
	chs := feed(t, s, clinic)
	if len(chs) != n {
		t.Fatalf("%d changes, want %d", len(chs), n)
	}
	for i, e := range chs {
		if e.CloudSeq != int64(i+1) {
			t.Fatalf("seq[%d] = %d, want %d", i, e.CloudSeq, i+1)
		}
	}
	var accepted []time.Time
	if err := s.db.Model(&Change{}).Where("clinic_id = ?", clinic).Order("cloud_seq").Pluck("accepted_at", &accepted).Error; err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(accepted); i++ {
		if accepted[i].Before(accepted[i-1]) {
			t.Fatalf("cloud_seq %d accepted at %s, before cloud_seq %d at %s", i+1, accepted[i], i, accepted[i-1])
		}
	}
	var out int64
	if err := s.db.Model(&Outbox{}).Where("clinic_id = ?", clinic).Count(&out).Error; err != nil {
		t.Fatal(err)
	}
	if out != int64(n) {
		t.Fatalf("%d outbox rows, want %d", out, n)
	}
	var last int64
	if err := s.db.Model(&Clinic{}).Where("id = ?", clinic).Pluck("last_seq", &last).Error; err != nil {
		t.Fatal(err)
	}
	if last != int64(n) {
		t.Fatalf("clinic last_seq = %d, want %d", last, n)
	}
	return chs
}

func createPatient(s *Store, clinic, id ids.ID) error {
	_, err := s.Save(context.Background(), clinic, Edit{Kind: wire.KindPatient, ID: id, Create: true, ChangeID: id,
		Content: records.Sample(wire.KindPatient, int(id), nil)})
	return err
}

// Saves waiting while the clinic is locked go together in one commit.
func TestConcurrentSavesShareACommit(t *testing.T) {
	s := open(t)
	enroll(t, s, 100, "")
	release := holdClinic(t, s, 100)
	const n = 100
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- createPatient(s, 100, ids.ID(1000+i)) }()
	}
	waitQueued(t, s, 100, n)
	release()
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	commits, saves := s.GroupCommits()
	// The first save's batch waited on the lock alone; the rest queued
	// behind it and commit together, maxSaveBatch at a time.
	if want := int64(1 + (n-1+maxSaveBatch-1)/maxSaveBatch); saves != n || commits > want {
		t.Fatalf("%d saves in %d commits, want %d in at most %d", saves, commits, n, want)
	}
	checkDense(t, s, 100, n)
}

// A save that fails in a batch fails alone, with its own error, and leaves
// nothing behind (no row, no change, no outbox row, no cloud_seq); the
// others commit.
func TestFailingSaveFailsAlone(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100, "")
	if err := createPatient(s, 100, 1); err != nil {
		t.Fatal(err)
	}
	release := holdClinic(t, s, 100)
	type result struct {
		name string
		err  error
	}
	results := make(chan result, 16)
	run := func(name string, f func() error) { go func() { results <- result{name, f()} }() }
	for i := range 5 {
		run("good", func() error { return createPatient(s, 100, ids.ID(10+i)) })
	}
	stale := version.V{A: 7}
	run("conflict", func() error {
		_, err := s.Save(ctx, 100, Edit{Kind: wire.KindPatient, ID: 1, Base: &stale, ChangeID: 50,
			Content: records.Sample(wire.KindPatient, 1, nil)})
		return err
	})
	run("missing", func() error {
		_, err := s.Save(ctx, 100, Edit{Kind: wire.KindStudy, ID: 51, Create: true, ChangeID: 51,
			Content: records.Sample(wire.KindStudy, 1, map[wire.Kind]ids.ID{wire.KindPatient: 77})})
		return err
	})
	// A save that buffered its change for the flush, then failed.
	run("buffered", func() error {
		return s.inClinicSave(ctx, 100, nil, func(ct *clinicTx) error {
			k, err := opsFor(wire.KindPatient)
			if err != nil {
				return err
			}
			rec := k.newRow()
			m := rec.meta()
			m.ClinicID, m.ID, m.Kind, m.Version, m.LastChangeID = 100, 52, wire.KindPatient, version.First, 52
			rec.setContent(records.Sample(wire.KindPatient, 52, nil))
			if err := ct.acceptChange(rec, false, version.V{}, Now(), "", false, Person{}); err != nil {
				return err
			}
			return errors.New("boom after buffering")
		})
	})
	// A statement error aborts PostgreSQL's transaction up to the savepoint.
	run("statement", func() error {
		return s.inClinicSave(ctx, 100, nil, func(ct *clinicTx) error { return ct.tx.Exec("SELECT 1/0").Error })
	})
	run("panic", func() error {
		return s.inClinicSave(ctx, 100, nil, func(*clinicTx) error { panic("a save's bug") })
	})
	for i := range 3 {
		run("good", func() error { return createPatient(s, 100, ids.ID(20+i)) })
	}
	const n = 5 + 5 + 3
	waitQueued(t, s, 100, n+1) // and the first create's batch
	release()
	good := 0
	for range n {
		r := <-results
		switch r.name {
		case "good":
			if r.err != nil {
				t.Errorf("good save: %v", r.err)
			}
			good++
		case "conflict":
			if !errors.Is(r.err, ErrVersionConflict) {
				t.Errorf("stale save: %v, want ErrVersionConflict", r.err)
			}
		case "missing":
			if !errors.Is(r.err, ErrMissingRef) {
				t.Errorf("study of an unknown patient: %v, want ErrMissingRef", r.err)
			}
		case "buffered":
			if r.err == nil || !strings.Contains(r.err.Error(), "boom after buffering") {
				t.Errorf("buffered save: %v, want its own error", r.err)
			}
		case "statement":
			if r.err == nil || !strings.Contains(r.err.Error(), "division by zero") {
				t.Errorf("statement error: %v, want division by zero", r.err)
			}
		case "panic":
			if r.err == nil || !strings.Contains(r.err.Error(), "a save's bug") {
				t.Errorf("panicking save: %v", r.err)
			}
		}
	}
	if commits, saves := s.GroupCommits(); saves != n+1 || commits > 3 {
		t.Fatalf("%d saves in %d commits, want %d in at most 3", saves, commits, n+1)
	}
	chs := checkDense(t, s, 100, 1+good)
	for _, e := range chs {
		if e.RecordID == 52 || e.RecordID == 51 || e.ChangeID == 50 {
			t.Fatalf("a failed save's change was kept: %+v", e)
		}
	}
	for _, r := range []records.Ref{{Kind: wire.KindStudy, ID: 51}, {Kind: wire.KindPatient, ID: 52}} {
		if _, err := s.Get(ctx, 100, r.Kind, r.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(%s %s) = %v, want ErrNotFound", r.Kind, r.ID, err)
		}
	}
	if m, _ := patient(t, s, 100, 1); m.Version != version.First {
		t.Fatalf("patient 1 at %s after a refused save", m.Version)
	}
}

// A batch that fails as a whole (here: a save breaks the savepoint, so it
// cannot be rolled back to) commits nothing; its other saves run again
// alone and commit once each.
func TestBrokenBatchRetriesEachSaveAlone(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100, "")
	release := holdClinic(t, s, 100)
	errs := make(chan error, 16)
	const good = 6
	// The first save waits on the lock alone; the rest batch behind it.
	go func() { errs <- createPatient(s, 100, 9) }()
	waitQueued(t, s, 100, 1)
	for i := range good/2 - 1 {
		go func() { errs <- createPatient(s, 100, ids.ID(10+i)) }()
	}
	broke := make(chan error, 1)
	go func() {
		broke <- s.inClinicSave(ctx, 100, nil, func(ct *clinicTx) error {
			if err := ct.tx.Exec("RELEASE SAVEPOINT save").Error; err != nil {
				return err
			}
			return errors.New("and fails")
		})
	}()
	for i := range good / 2 {
		go func() { errs <- createPatient(s, 100, ids.ID(20+i)) }()
	}
	waitQueued(t, s, 100, good+1)
	release()
	for range good {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-broke; err == nil {
		t.Fatal("the breaking save succeeded")
	}
	checkDense(t, s, 100, good)
}

// Two nodes (two Stores on one database) saving into the same clinics at
// once: each clinic's cloud_seq stays dense and in order of acceptance,
// every save is in the log once, and clinic changes applied meanwhile
// (ApplyUp, the same row lock) interleave without a gap.
func TestSavesFromTwoNodesKeepTheSequenceDense(t *testing.T) {
	url := testenv.PostgresDB(t)
	var nodes [2]*Store
	for i := range nodes {
		s, err := Open(context.Background(), url, &seqIDs{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		nodes[i] = s
	}
	clinics := []ids.ID{100, 101}
	for _, c := range clinics {
		enroll(t, nodes[0], c, "")
	}
	const perNode, ups = 120, 20
	var wg sync.WaitGroup
	for ni, s := range nodes {
		for _, c := range clinics {
			for i := range perNode {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := createPatient(s, c, ids.ID(int(c)*100_000+ni*10_000+i)); err != nil {
						t.Error(err)
					}
				}()
			}
		}
	}
	for _, c := range clinics {
		for i := range ups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := ids.ID(int(c)*100_000 + 50_000 + i)
				if _, err := nodes[i%2].ApplyUp(context.Background(), c, []wire.Envelope{change(c, id, id, version.V{}, version.First, "up")}); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, c := range clinics {
		chs := checkDense(t, nodes[1], c, 2*perNode+ups)
		seen := map[ids.ID]bool{}
		for _, e := range chs {
			if seen[e.RecordID] {
				t.Fatalf("clinic %s: record %s twice in the log", c, e.RecordID)
			}
			seen[e.RecordID] = true
		}
	}
	var commits, saves int64
	for _, s := range nodes {
		c, n := s.GroupCommits()
		commits += c
		saves += n
	}
	t.Logf("%d saves in %d group commits", saves, commits)
}

// A save's hook (the API's audit entry) runs in the save's transaction: its
// writes commit with the save, and a failing hook fails its save alone,
// taking its writes with it.
func TestSaveHookSharesTheSavesTransaction(t *testing.T) {
	s := open(t)
	enroll(t, s, 100, "")
	if err := createPatient(s, 100, 1); err != nil {
		t.Fatal(err)
	}
	release := holdClinic(t, s, 100)
	hooked := func(name string, fail bool) context.Context {
		return WithSaveHook(context.Background(), func(tx *gorm.DB, rec Record) error {
			if err := tx.Exec("UPDATE clinics SET name = ? WHERE id = ?", name+" "+RecordMeta(rec).ID.String(), 100).Error; err != nil {
				return err
			}
			if fail {
				return errors.New("hook failed")
			}
			return nil
		})
	}
	errs := make(chan error, 2)
	// A first save waits on the lock alone; the hooked ones batch behind it.
	first := make(chan error, 1)
	go func() { first <- createPatient(s, 100, 5) }()
	waitQueued(t, s, 100, 2)
	for i, fail := range []bool{false, true} {
		go func() {
			_, err := s.Save(hooked("hooked", fail), 100, Edit{Kind: wire.KindPatient, ID: ids.ID(10 + i), Create: true, ChangeID: ids.ID(10 + i),
				Content: records.Sample(wire.KindPatient, i, nil)})
			errs <- err
		}()
	}
	waitQueued(t, s, 100, 4)
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	var failed int
	for range 2 {
		if err := <-errs; err != nil {
			if !strings.Contains(err.Error(), "hook failed") {
				t.Fatalf("save = %v", err)
			}
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d saves failed, want the one whose hook failed", failed)
	}
	c, err := s.ClinicByID(context.Background(), 100)
	if err != nil || c.Name != "hooked 10" {
		t.Fatalf("clinic name %q (%v), want the kept hook's write", c.Name, err)
	}
	if _, err := s.Get(context.Background(), 100, wire.KindPatient, 11); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the failed hook's save: Get = %v, want ErrNotFound", err)
	}
	checkDense(t, s, 100, 3)
}

// A group commit reads its saves' records at once and its saves read and
// write through them; a save rolled back to its savepoint must leave them
// as the database has them. Here, in one batch: a create and an update
// fail after writing (their hook fails), and an update of a study fails
// on a missing patient after it changed its record's fields; then a study
// refers to the failed create's patient (missing), the updates are made
// again from the version before (no conflict), and the create too (it
// does not exist).
func TestFailedSaveLeavesTheBatchsRecords(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	enroll(t, s, 100, "")
	if err := createPatient(s, 100, 1); err != nil {
		t.Fatal(err)
	}
	study := func(id, changeID, patient ids.ID) records.Content {
		return records.Sample(wire.KindStudy, int(changeID), map[wire.Kind]ids.ID{wire.KindPatient: patient})
	}
	if _, err := s.Save(ctx, 100, Edit{Kind: wire.KindStudy, ID: 70, Create: true, ChangeID: 70, Content: study(70, 70, 1)}); err != nil {
		t.Fatal(err)
	}
	failing := WithSaveHook(ctx, func(*gorm.DB, Record) error { return errors.New("hook failed") })
	first := version.First
	steps := []struct {
		name string
		save func() error
		want error // nil: saved (unless hook)
		hook bool  // fails with its hook's error
	}{
		{"lone", func() error { return createPatient(s, 100, 5) }, nil, false},
		{"create, then fail", func() error {
			_, err := s.Save(failing, 100, Edit{Kind: wire.KindPatient, ID: 60, Create: true, ChangeID: 60,
				Content: records.Sample(wire.KindPatient, 60, nil)})
			return err
		}, nil, true},
		{"update, then fail", func() error {
			_, err := s.Save(failing, 100, Edit{Kind: wire.KindPatient, ID: 1, Base: &first, ChangeID: 61,
				Content: records.Sample(wire.KindPatient, 61, nil)})
			return err
		}, nil, true},
		{"update of a study to a missing patient", func() error {
			_, err := s.Save(ctx, 100, Edit{Kind: wire.KindStudy, ID: 70, Base: &first, ChangeID: 71, Content: study(70, 71, 99)})
			return err
		}, ErrMissingRef, false},
		{"study of the failed create's patient", func() error {
			_, err := s.Save(ctx, 100, Edit{Kind: wire.KindStudy, ID: 62, Create: true, ChangeID: 62,
				Content: records.Sample(wire.KindStudy, 62, map[wire.Kind]ids.ID{wire.KindPatient: 60})})
			return err
		}, ErrMissingRef, false},
		{"update from the version before", func() error {
			_, err := s.Save(ctx, 100, Edit{Kind: wire.KindPatient, ID: 1, Base: &first, ChangeID: 63,
				Content: records.Sample(wire.KindPatient, 63, nil)})
			return err
		}, nil, false},
		{"create again", func() error { return createPatient(s, 100, 60) }, nil, false},
		{"update of the study from the version before", func() error {
			_, err := s.Save(ctx, 100, Edit{Kind: wire.KindStudy, ID: 70, Base: &first, ChangeID: 72, Content: study(70, 72, 1)})
			return err
		}, nil, false},
	}
	release := holdClinic(t, s, 100)
	commits0, saves0 := s.GroupCommits()
	errs := make([]chan error, len(steps))
	for i, st := range steps {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- st.save() }()
		waitQueued(t, s, 100, saves0+int64(i)+1) // in this order
	}
	release()
	for i, st := range steps {
		err := <-errs[i]
		switch {
		case st.hook:
			if err == nil || !strings.Contains(err.Error(), "hook failed") {
				t.Errorf("%s: %v, want its hook's error", st.name, err)
			}
		case st.want == nil && err != nil:
			t.Errorf("%s: %v", st.name, err)
		case !errors.Is(err, st.want):
			t.Errorf("%s: %v, want %v", st.name, err, st.want)
		}
	}
	if commits, saves := s.GroupCommits(); saves-saves0 != int64(len(steps)) || commits-commits0 > 2 {
		t.Fatalf("%d saves in %d commits: want the lone one, then the others in one batch", saves-saves0, commits-commits0)
	}
	checkDense(t, s, 100, 6)
}
