package store

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
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
// it is free, runs them in one transaction and commits once. A write is
// answered only after the commit that holds it, so durability is what it
// was: nothing is acknowledged before its fsync.
//
// A write that fails fails alone; the others of its batch commit. The
// first write of a transaction runs as it is: if it fails, the transaction
// holds nothing else and is rolled back, and the next write of the batch
// opens another. The others run as they are too (a savepoint each would
// cost its statements and SQLite's copies of the pages it changes), until
// one fails: its transaction is then rolled back, its error is its answer,
// and the writes kept in it run again in a new one, each under a savepoint
// of its own, as do the rest of the batch and the next carefulBatches
// batches (a failing write there rolls back to its savepoint). If the
// batch itself cannot commit (or a savepoint cannot be rolled back), every
// write of it that had not failed on its own runs again in a transaction
// of its own, as before.
//
// Batches form by themselves: the writes arriving while one commits wait,
// and go together in the next. When a recent batch was larger than the one
// being gathered, the committer waits a moment for the writers a busy
// moment brings; a lone write does not wait for company. (Running each
// write as it came, while gathering, was tried: on a 2-core machine it cost
// CPU and gained no throughput, docs/performance.md.)

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
	// recent: the sizes of the last batches; linger: the longest a batch
	// waits for more writers (tests set both before their first write).
	// Only the committer's goroutine uses them.
	recent [4]int
	linger time.Duration
	// careful: how many more batches run their writes under savepoints
	// (commit.go's giveUp); only the committer's goroutine uses it.
	careful int
}

func newCommitter() *committer {
	return &committer{reqs: make(chan *writeReq), closing: make(chan struct{}), stopped: make(chan struct{}), linger: defaultLinger}
}

// stop ends the committer after the batch it runs, and waits for it.
func (c *committer) stop() {
	c.once.Do(func() { close(c.closing) })
	<-c.stopped
}

// write runs fn in a group commit and returns its outcome once the commit
// that holds its change is durable (or fn's own error). fn must use only
// tx (the writer connection is the batch's), and may run more than once:
// again in a new transaction of its batch when a later write of it fails
// without a savepoint, and on its own if its batch fails as a whole. It
// must set its outputs anew each time. A write whose ctx ends before it
// runs is not run; once it is in a batch, the caller waits for the commit
// whatever ctx says, so that it never reports as failed a change that was
// committed.
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

// commitLoop runs group commits until the store closes. Its goroutine is
// labelled (store=committer), so a CPU profile tells the committer's work,
// the serial part of every write, from the requests' (go tool pprof
// -tagfocus store=committer).
func (s *Store) commitLoop() {
	defer close(s.gc.stopped)
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("store", "committer")))
	n := 0
	var held *writeReq   // a write that goes alone, taken while gathering: the next batch
	var reqs []*writeReq // the batch being gathered
	lingering := time.NewTimer(time.Hour)
	lingering.Stop()
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
		reqs = append(reqs[:0], first)
		if !first.alone {
			held = s.gather(&reqs, lingering)
		}
		b := s.gc.newBatch(s)
		for _, r := range reqs {
			b.run(r)
		}
		clear(reqs)
		s.gc.recent[n%len(s.gc.recent)] = len(b.reqs)
		n++
		b.commit()
	}
}

// gather adds to *reqs every write waiting (they came while the last
// batch committed: so batches grow with the writers), then, while it
// holds fewer than the largest of the last batches (many writers at once,
// who are usually a few hundred microseconds behind), waits for more, up
// to linger. A lone writer (recent batches of one) never waits, nor does a
// store closing. It returns a write that goes alone, held for the next
// batch.
func (s *Store) gather(reqs *[]*writeReq, t *time.Timer) (held *writeReq) {
	for len(*reqs) < maxBatch {
		select {
		case r := <-s.gc.reqs:
			if r.alone {
				return r
			}
			*reqs = append(*reqs, r)
			continue
		default:
		}
		break
	}
	want := min(slices.Max(s.gc.recent[:]), maxBatch)
	if len(*reqs) >= want {
		return nil
	}
	t.Reset(s.gc.linger)
	defer t.Stop()
	for len(*reqs) < want {
		select {
		case r := <-s.gc.reqs:
			if r.alone {
				return r
			}
			*reqs = append(*reqs, r)
		case <-t.C:
			return nil
		case <-s.gc.closing: // commit what it holds
			return nil
		}
	}
	return nil
}

// defaultLinger is the longest a batch waits for the writers a busy moment
// is expected to bring (the largest of the last few batches).
const defaultLinger = 2 * time.Millisecond

// batch is one group commit: its writes, run in turn in tx.
type batch struct {
	s    *Store
	reqs []*writeReq
	errs []error
	ran  []bool   // run in the batch, and failed or kept
	tx   *gorm.DB // the open transaction; nil before the first write, or after one that failed first in it
	// inTx: the writes kept in tx (to run again if it must be given up).
	inTx []int
	// careful: each write after the first of a transaction runs under a
	// savepoint. Otherwise they run as they are, and the first that fails
	// gives the transaction up: the others run again, carefully.
	careful bool
	// lost: the transaction was lost as a whole (a savepoint, the begin);
	// the writes not run yet run after it, alone.
	lost error
}

// newBatch is the committer's next batch: careful for a while after a
// write failed in a batch that was not.
func (c *committer) newBatch(s *Store) *batch {
	b := &batch{s: s, careful: c.careful > 0}
	if c.careful > 0 {
		c.careful--
	}
	return b
}

// carefulBatches is how many batches run their writes under savepoints
// after a write failed in one that did not: a client whose writes keep
// failing does not make every batch run twice.
const carefulBatches = 32

// run takes r into b and runs it.
func (b *batch) run(r *writeReq) {
	b.reqs = append(b.reqs, r)
	b.errs = append(b.errs, nil)
	b.ran = append(b.ran, false)
	b.exec(len(b.reqs) - 1)
}

// exec runs write i in b's transaction, opening one if none is open. The
// first write of a transaction needs no savepoint: if it fails, its
// transaction is rolled back whole, nothing else in it, and the next write
// opens another. In a careful batch the others run each under a savepoint
// of its own, and one that fails rolls back to it; in the others they run
// as they are, and one that fails gives up the transaction (see giveUp).
func (b *batch) exec(i int) {
	r := b.reqs[i]
	if b.lost != nil {
		return
	}
	if err := r.ctx.Err(); err != nil {
		b.errs[i], b.ran[i] = err, true
		return
	}
	if b.tx == nil {
		// The batch's context is none of its callers': one leaving must
		// not roll back the others.
		tx := b.s.db.WithContext(context.Background()).Begin()
		if tx.Error != nil {
			b.lost = tx.Error
			return
		}
		b.errs[i], b.ran[i] = run(r.fn, tx), true
		if b.errs[i] != nil {
			_ = tx.Rollback().Error // its own failure is the answer
			b.s.scopeKept.Store(nil)
			return
		}
		b.tx = tx
		b.inTx = append(b.inTx[:0], i)
		return
	}
	tx := b.tx
	if !b.careful {
		b.errs[i], b.ran[i] = run(r.fn, tx), true
		if b.errs[i] != nil {
			b.giveUp()
			return
		}
		b.inTx = append(b.inTx, i)
		return
	}
	if err := execRaw(tx, "SAVEPOINT w"); err != nil {
		b.lost = err
		return
	}
	if ferr := run(r.fn, tx); ferr != nil {
		if err := execRaw(tx, "ROLLBACK TO w"); err != nil {
			b.lost = fmt.Errorf("rollback to savepoint: %w", err)
			return
		}
		b.errs[i] = ferr
	}
	b.ran[i] = true
	if b.errs[i] == nil {
		b.inTx = append(b.inTx, i)
	}
	if err := execRaw(tx, "RELEASE w"); err != nil {
		b.lost = err
	}
}

// giveUp handles a write that failed in a transaction without savepoints:
// what it wrote cannot be undone alone, so the transaction is rolled back
// and the writes kept in it run again, in a new one, each under a
// savepoint, as do the rest of the batch and the next batches
// (carefulBatches). The failed write's error is its answer: it failed with
// the same writes before it as it would now.
func (b *batch) giveUp() {
	_ = b.tx.Rollback().Error
	b.tx = nil
	// What a write of the given-up transaction read may not commit.
	b.s.scopeKept.Store(nil)
	b.careful = true
	b.s.gc.careful = carefulBatches
	again := slices.Clone(b.inTx)
	b.inTx = b.inTx[:0]
	for _, j := range again {
		b.errs[j], b.ran[j] = nil, false
		b.exec(j)
	}
}

// commit commits b's transaction and answers each write.
func (b *batch) commit() {
	s := b.s
	err := b.lost
	if b.tx != nil {
		if err == nil {
			err = b.tx.Commit().Error
		}
		if err != nil {
			_ = b.tx.Rollback().Error
		}
		b.tx = nil
	}
	if err != nil {
		// What a write of the lost transaction read may not have
		// committed: the scope is read again (scopeIn).
		s.scopeKept.Store(nil)
	}
	s.gc.mu.Lock()
	s.gc.batches++
	s.gc.writes += int64(len(b.reqs))
	s.gc.mu.Unlock()
	switch {
	case err == nil:
	case len(b.reqs) == 1 && b.ran[0]:
		// A lone write's own commit failed: as before group commit.
		b.errs[0] = err
	default:
		// The batch failed as a whole (its commit, a savepoint): nothing of
		// it is durable. The writes that had not failed on their own run
		// again, each in a transaction of its own.
		for i, r := range b.reqs {
			if b.ran[i] && b.errs[i] != nil {
				continue
			}
			b.errs[i] = r.ctx.Err()
			if b.errs[i] == nil {
				b.errs[i] = s.db.WithContext(context.Background()).Transaction(func(tx *gorm.DB) error { return run(r.fn, tx) })
			}
		}
	}
	for i, r := range b.reqs {
		r.done <- b.errs[i]
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
// may run more than once (see write).
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
