package store

import (
	"context"
	"fmt"
	"sync"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
)

// Group commit of the cloud API's saves. Every save of a clinic's record
// runs in a transaction holding the clinic's row lock (cloud_seq is handed
// out under it), from its first statement to its commit's WAL flush, so one
// clinic's saves are strictly serial; at 200 saves a second on a busy
// machine they queued behind each other's commits for seconds. Instead, a
// node gathers a clinic's saves that arrive while one of them is committing
// and runs them together in the next transaction: one row lock, one commit,
// each save under a savepoint of its own. A save that fails (a version
// conflict, a missing reference, a statement error) rolls back to its
// savepoint and fails alone, with its own error; the others of its batch
// commit. A save is answered only after the commit holding it. If the batch
// cannot commit as a whole (or a savepoint cannot be rolled back), each
// save of it that had not failed on its own runs again in a transaction of
// its own, as before group commit.
//
// Nodes share one PostgreSQL: what orders a clinic's saves across them is
// still the clinic's row lock (each batch takes it, and cloud_seq is read
// and advanced under it), not anything in this process. A node's batches
// are per clinic (a lane each, started by a clinic's first waiting save and
// ended when none waits), so clinics commit in parallel as before.
//
// A lone save does not wait for company: batches form by themselves while
// the previous one commits.

// maxSaveBatch bounds the saves of one group commit. Each save is a
// subtransaction (its savepoint), and a backend caches the ids of at most
// 64 of them: past that, while the batch runs, every snapshot of every
// backend looks its subtransactions up in pg_subtrans.
const maxSaveBatch = 64

// saveReq is one save waiting for its clinic's lane.
type saveReq struct {
	ctx  context.Context
	refs []records.Ref // the records fn reads (read for the batch at once)
	fn   func(ct *clinicTx) error
	done chan error
}

// committer holds the node's clinic lanes.
type committer struct {
	mu    sync.Mutex
	lanes map[ids.ID][]*saveReq // the saves waiting, per clinic with a lane running
	// batches and saves count group commits and the saves they held
	// (tests and the bench read them).
	batches, saves int64
}

// inClinicSave runs fn, a save into one clinic, in a group commit with the
// clinic's other saves waiting on this node, and returns once the commit
// holding it is durable (or fn's own error). fn must work through ct only,
// and may run a second time, alone, if its batch fails as a whole: it must
// set its outputs anew each time. A save whose ctx ends before its batch
// runs is not run; once it ran, the caller waits for the commit whatever ctx
// says, so that it never reports as failed a change that was committed.
//
// fn must not leave state in ct that a rollback to its savepoint would not
// undo: inClinicSave restores ct's fields as they were before fn (so the
// rows fn buffered for the batch's flush are dropped with it), which covers
// the buffers a save uses (changes, outbox rows, created records, the
// clinic's last cloud_seq), not the maps a primed batch (ApplyUp) fills.
//
// refs are the records fn reads: a batch of several saves reads them all
// in a statement per kind before the first save, and its saves read and
// write through ct's records (a save's changes to them are undone with its
// savepoint).
func (s *Store) inClinicSave(ctx context.Context, clinic ids.ID, refs []records.Ref, fn func(ct *clinicTx) error) error {
	r := &saveReq{ctx: ctx, refs: refs, fn: fn, done: make(chan error, 1)}
	s.gc.mu.Lock()
	if s.gc.lanes == nil {
		s.gc.lanes = map[ids.ID][]*saveReq{}
	}
	q, running := s.gc.lanes[clinic]
	s.gc.lanes[clinic] = append(q, r)
	s.gc.mu.Unlock()
	if !running {
		go s.lane(clinic)
	}
	return <-r.done
}

// lane commits clinic's waiting saves, a batch at a time, until none waits.
func (s *Store) lane(clinic ids.ID) {
	for {
		s.gc.mu.Lock()
		q := s.gc.lanes[clinic]
		if len(q) == 0 {
			delete(s.gc.lanes, clinic)
			s.gc.mu.Unlock()
			return
		}
		n := min(len(q), maxSaveBatch)
		batch := q[:n:n]
		s.gc.lanes[clinic] = q[n:]
		s.gc.batches++
		s.gc.saves += int64(n)
		s.gc.mu.Unlock()
		s.commitSaves(clinic, batch)
	}
}

// commitSaves runs batch in one transaction of clinic and answers each save.
func (s *Store) commitSaves(clinic ids.ID, batch []*saveReq) {
	errs := make([]error, len(batch))
	ran := make([]bool, len(batch)) // run in the batch, and failed or kept
	// The batch's context is none of its callers': one leaving must not
	// roll back the others.
	err := s.inClinic(context.Background(), clinic, func(ct *clinicTx) error {
		// A save's savepoint is released with the next one's start, in one
		// round trip (statements without arguments go as one simple
		// query); the last one's by the commit.
		open := false
		if len(batch) > 1 {
			var refs []records.Ref
			for _, r := range batch {
				if r.ctx.Err() == nil {
					refs = append(refs, r.refs...)
				}
			}
			if err := ct.primeSaves(refs); err != nil {
				return err
			}
		}
		for i, r := range batch {
			if err := r.ctx.Err(); err != nil {
				errs[i], ran[i] = err, true
				continue
			}
			if len(batch) == 1 {
				errs[i], ran[i] = runSave(r.fn, ct), true
				return errs[i] // its own transaction: nothing to keep
			}
			sp := "SAVEPOINT save"
			if open {
				sp = "RELEASE SAVEPOINT save; SAVEPOINT save"
			}
			if err := ct.tx.Exec(sp).Error; err != nil {
				return err
			}
			open = true
			var undo []recUndo
			ct.undo = &undo
			before, res := *ct, *ct.res
			if ferr := runSave(r.fn, ct); ferr != nil {
				if err := ct.tx.Exec("ROLLBACK TO SAVEPOINT save").Error; err != nil {
					return fmt.Errorf("rollback to savepoint: %w", err)
				}
				// What fn buffered for the flush goes with its rows, and
				// what it wrote through the batch's records.
				ct.revert(undo)
				*ct, *ct.res = before, res
				errs[i] = ferr
			}
			ran[i] = true
		}
		return nil
	})
	switch {
	case err == nil:
	case len(batch) == 1 && ran[0]:
		// A lone save's own error, or its commit's: as before group commit.
		errs[0] = err
	default:
		// The batch failed as a whole (its commit, a savepoint, the
		// clinic's lock): nothing of it is durable. The saves that had not
		// failed on their own run again, each in a transaction of its own.
		for i, r := range batch {
			if ran[i] && errs[i] != nil {
				continue
			}
			errs[i] = r.ctx.Err()
			if errs[i] == nil {
				errs[i] = s.inClinic(context.Background(), clinic, func(ct *clinicTx) error { return runSave(r.fn, ct) })
			}
		}
	}
	for i, r := range batch {
		r.done <- errs[i]
	}
}

// runSave calls fn, turning a panic into an error: a lane serves every
// save of its clinic and must outlive one save's bug.
func runSave(fn func(ct *clinicTx) error, ct *clinicTx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: save panicked: %v", p)
		}
	}()
	return fn(ct)
}

// GroupCommits returns how many group commits of API saves this node ran
// and how many saves they held (saves/commits is the mean batch).
func (s *Store) GroupCommits() (commits, saves int64) {
	s.gc.mu.Lock()
	defer s.gc.mu.Unlock()
	return s.gc.batches, s.gc.saves
}

type saveHookKey struct{}

// WithSaveHook returns ctx carrying fn: a Save under that ctx calls fn in
// its own transaction (under its savepoint), after its change, with the
// record saved; if fn fails, the save does too. The API writes a request's
// audit entry so, together with the change it records: one commit for
// both, and no entry for a change that did not commit.
func WithSaveHook(ctx context.Context, fn func(tx *gorm.DB, rec Record) error) context.Context {
	return context.WithValue(ctx, saveHookKey{}, fn)
}

// saveHook runs ctx's save hook, if any.
func saveHook(ctx context.Context, tx *gorm.DB, rec Record) error {
	if fn, ok := ctx.Value(saveHookKey{}).(func(tx *gorm.DB, rec Record) error); ok {
		return fn(tx, rec)
	}
	return nil
}
