package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"gorm.io/gorm"
)

// Group commit. With synchronous=FULL every commit costs an fsync of the
// WAL, and on one writer connection the fsyncs, not the statements, bound
// how many saves a second the clinic takes (about 1.2 fsyncs per record
// when each API write had its own transaction). The API's writes (creates,
// updates, deletes, edit-session saves, per-record sync choices, imports)
// go to one committer goroutine instead: it takes every write waiting when
// it is free, runs them in one transaction, each under a savepoint of its
// own, and commits once. A write is answered only after the commit that
// holds it, so durability is what it was: nothing is acknowledged before
// its fsync. A write that fails rolls back to its savepoint and fails
// alone; the others of its batch commit. If the batch itself cannot commit
// (or a savepoint cannot be rolled back), every write of it that had not
// failed on its own runs again in a transaction of its own, as before.
//
// Batches form by themselves: while one commits, the writes arriving
// meanwhile wait, and go together in the next. A lone write does not wait
// for company.

// ErrClosed: the store is closed.
var ErrClosed = errors.New("store: closed")

// maxBatch bounds the writes of one group commit (an import is one write,
// whatever its size).
const maxBatch = 256

// writeReq is one write waiting for the committer.
type writeReq struct {
	ctx  context.Context
	fn   func(tx *gorm.DB) error
	done chan error
	// alone: a large write (an import of thousands of records) that gets
	// a transaction of its own. Under a savepoint SQLite would journal the
	// pages it changes a second time, for a rollback that it never needs
	// alone, and the small writes behind it wait for it anyway.
	alone bool
}

// committer gathers writes into group commits.
type committer struct {
	reqs    chan *writeReq
	closing chan struct{}
	stopped chan struct{}
	once    sync.Once
	// batches and writes count group commits and the writes they held
	// (tests read them).
	mu      sync.Mutex
	batches int64
	writes  int64
}

func newCommitter() *committer {
	return &committer{reqs: make(chan *writeReq), closing: make(chan struct{}), stopped: make(chan struct{})}
}

// stop ends the committer after the batch it runs, and waits for it.
func (c *committer) stop() {
	c.once.Do(func() { close(c.closing) })
	<-c.stopped
}

// write runs fn in a group commit and returns its outcome once the commit
// that holds its change is durable (or fn's own error). fn must use only
// tx (the writer connection is the batch's), and may run a second time, on
// its own, if its batch fails as a whole: it must set its outputs anew
// each time. A write whose ctx ends before it runs is not run; once it is
// in a batch, the caller waits for the commit whatever ctx says, so that
// it never reports as failed a change that was committed.
func (s *Store) write(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return s.submit(&writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// writeAlone is write for a large write: it commits in a transaction of
// its own, in turn with the group commits.
func (s *Store) writeAlone(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return s.submit(&writeReq{ctx: ctx, fn: fn, done: make(chan error, 1), alone: true})
}

func (s *Store) submit(r *writeReq) error {
	ctx := r.ctx
	select {
	case s.gc.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.gc.closing:
		return ErrClosed
	}
	return <-r.done
}

// commitLoop runs group commits until the store closes.
func (s *Store) commitLoop() {
	defer close(s.gc.stopped)
	var recent [4]int // the sizes of the last batches
	n := 0
	var held *writeReq // a write that goes alone, taken while gathering: the next batch
	for {
		first := held
		held = nil
		if first == nil {
			select {
			case first = <-s.gc.reqs:
			case <-s.gc.closing:
				return
			}
		}
		batch := []*writeReq{first}
		// add takes r into the batch, or holds it for the next one if
		// either goes alone; false ends the gathering.
		add := func(r *writeReq) bool {
			if r.alone || batch[0].alone {
				held = r
				return false
			}
			batch = append(batch, r)
			return true
		}
	gather:
		for len(batch) < maxBatch && !first.alone {
			select {
			case r := <-s.gc.reqs:
				if !add(r) {
					break gather
				}
			default:
				break gather
			}
		}
		// Many writers at once (a recent batch was larger than this one so
		// far): wait a moment for the others, who are usually a few hundred
		// microseconds behind, rather than commit each alone. A lone writer
		// (recent batches of one) never waits.
		if last := slices.Max(recent[:]); len(batch) < last && held == nil && !first.alone {
			t := time.NewTimer(linger)
		wait:
			for len(batch) < last {
				select {
				case r := <-s.gc.reqs:
					if !add(r) {
						break wait
					}
				case <-t.C:
					break wait
				}
			}
			t.Stop()
		}
		recent[n%len(recent)] = len(batch)
		n++
		s.commitBatch(batch)
	}
}

// linger is the longest a batch waits for the writers a busy moment is
// expected to bring (the largest of the last few batches).
const linger = 2 * time.Millisecond

// commitBatch runs batch in one transaction and answers each write.
func (s *Store) commitBatch(batch []*writeReq) {
	errs := make([]error, len(batch))
	ran := make([]bool, len(batch)) // run in the batch, and failed or kept
	// The batch's context is none of its callers': one leaving must not
	// roll back the others.
	err := s.db.WithContext(context.Background()).Transaction(func(tx *gorm.DB) error {
		for i, r := range batch {
			if err := r.ctx.Err(); err != nil {
				errs[i], ran[i] = err, true
				continue
			}
			if len(batch) == 1 {
				errs[i], ran[i] = run(r.fn, tx), true
				return errs[i] // its own transaction: nothing to keep
			}
			if err := execRaw(tx, "SAVEPOINT w"); err != nil {
				return err
			}
			if ferr := run(r.fn, tx); ferr != nil {
				if err := execRaw(tx, "ROLLBACK TO w"); err != nil {
					return fmt.Errorf("rollback to savepoint: %w", err)
				}
				errs[i] = ferr
			}
			ran[i] = true
			if err := execRaw(tx, "RELEASE w"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// What a write of the lost transaction read may not have
		// committed: the scope is read again (scopeIn).
		s.scopeKept.Store(nil)
	}
	s.gc.mu.Lock()
	s.gc.batches++
	s.gc.writes += int64(len(batch))
	s.gc.mu.Unlock()
	switch {
	case err == nil:
	case len(batch) == 1 && ran[0]:
		// A lone write's own error, or its commit's: as before group commit.
		errs[0] = err
	default:
		// The batch failed as a whole (its commit, a savepoint): nothing of
		// it is durable. The writes that had not failed on their own run
		// again, each in a transaction of its own.
		for i, r := range batch {
			if ran[i] && errs[i] != nil {
				continue
			}
			errs[i] = r.ctx.Err()
			if errs[i] == nil {
				errs[i] = s.db.WithContext(context.Background()).Transaction(func(tx *gorm.DB) error { return run(r.fn, tx) })
			}
		}
	}
	for i, r := range batch {
		r.done <- errs[i]
	}
}

// run calls fn, turning a panic into an error: the committer serves every
// writer and must outlive one write's bug.
func run(fn func(tx *gorm.DB) error, tx *gorm.DB) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: write panicked: %v", p)
		}
	}()
	return fn(tx)
}

// GroupCommits returns how many group commits ran and how many writes they
// held (writes/commits is the mean batch).
func (s *Store) GroupCommits() (commits, writes int64) {
	s.gc.mu.Lock()
	defer s.gc.mu.Unlock()
	return s.gc.batches, s.gc.writes
}

// Write runs fn in a group commit with the API's other writes and returns
// once the commit holding it is durable: for packages keeping their own
// tables in the clinic's database (the audit log). fn must use only tx and
// may run twice (see write).
func (s *Store) Write(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return s.write(ctx, fn)
}

type writeHookKey struct{}

// WithWriteHook returns ctx carrying fn: a Save under that ctx calls fn in
// its own transaction (its savepoint), after its change, with the record
// saved; if fn fails, the save does too. The API writes a request's audit
// entry so, together with the change it records.
func WithWriteHook(ctx context.Context, fn func(tx *gorm.DB, rec Record) error) context.Context {
	return context.WithValue(ctx, writeHookKey{}, fn)
}

// writeHook runs ctx's write hook, if any.
func writeHook(ctx context.Context, tx *gorm.DB, rec Record) error {
	if fn, ok := ctx.Value(writeHookKey{}).(func(tx *gorm.DB, rec Record) error); ok {
		return fn(tx, rec)
	}
	return nil
}
