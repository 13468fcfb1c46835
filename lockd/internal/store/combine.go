package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Combining. The lock scripts (acquire, renew, release, and the operations
// of a batch) of one Store share one call to Redis in flight at a time. A
// call that finds none in flight goes to Redis at once, from its own
// goroutine, as it always did: a lone caller waits for nothing. Calls made
// while one is in flight queue; when it returns, the caller whose reply
// came in hands the queue (up to maxCombined scripts) to the first queued
// caller, which sends it as one pipeline and answers the others: one write
// and one read on each side for the lot, as a group commit does for a
// database. Each script stays its own atomic step with the reply it would
// have alone.
//
// Every caller waits at most for its own context, which the store's
// timeout bounds: one that ends while its scripts are queued leaves the
// queue, and its scripts are never sent; one that ends while they are in
// flight returns at once (the scripts may still run, as an abandoned
// request's may), and should it have been the one to send them, that goes
// on in a goroutine of its own. A pipeline runs under a context of its own,
// never under one caller's, so a caller that goes away does not fail the
// others; its deadline is the earliest of its callers', so that its sender
// never waits past its own (the others queued at most one round trip
// later). A Redis error fails only the scripts of the pipeline it hit.

// maxCombined bounds the scripts of one combined pipeline (one batch of a
// client may be larger: it goes whole). The same as lockapi.MaxBatch.
const maxCombined = 64

// reply is what one script returned.
type reply struct {
	v   []any
	err error
}

type combiner struct {
	mu    sync.Mutex
	busy  bool // a call to Redis is in flight
	queue []*waiter
	// combined counts the scripts that went in another caller's pipeline.
	combined atomic.Uint64
}

// waiter is a queued caller. Whoever sends its scripts fills replies and
// then closes wake; or, to make it the sender of the next pipeline, sets
// lead and closes wake.
type waiter struct {
	ctx     context.Context
	calls   []call
	replies []reply
	lead    []*waiter
	wake    chan struct{}
}

// Combined is how many lock scripts went to Redis in a pipeline another
// caller sent.
func (s *Store) Combined() uint64 { return s.comb.combined.Load() }

// exec runs calls, alone or combined with those of concurrent callers, and
// returns one reply each. Every failure is ErrUnavailable.
func (s *Store) exec(ctx context.Context, calls []call) []reply {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	c := &s.comb
	c.mu.Lock()
	if !c.busy {
		c.busy = true
		c.mu.Unlock()
		r := s.send(ctx, calls)
		s.next()
		return r
	}
	w := &waiter{ctx: ctx, calls: calls, wake: make(chan struct{})}
	c.queue = append(c.queue, w)
	c.mu.Unlock()
	select {
	case <-w.wake:
	case <-ctx.Done():
		c.mu.Lock()
		if i := slices.Index(c.queue, w); i >= 0 {
			c.queue = slices.Delete(c.queue, i, i+1)
			c.mu.Unlock()
			return failed(len(calls), ctx.Err())
		}
		c.mu.Unlock()
		// Taken already: the sender will answer (or make it the sender).
		go func() {
			<-w.wake
			if w.lead != nil {
				s.lead(w)
			}
		}()
		return failed(len(calls), ctx.Err())
	}
	if w.lead != nil {
		s.lead(w)
	}
	if w.replies == nil {
		// Its context ended as it was woken: its scripts were not sent.
		return failed(len(calls), ctx.Err())
	}
	return w.replies
}

// next ends a call to Redis: it hands what queued meanwhile to the first
// queued caller, or marks the store idle.
func (s *Store) next() {
	c := &s.comb
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.busy = false
		c.mu.Unlock()
		return
	}
	n, scripts := 0, 0
	for n < len(c.queue) && (n == 0 || scripts+len(c.queue[n].calls) <= maxCombined) {
		scripts += len(c.queue[n].calls)
		n++
	}
	batch := slices.Clone(c.queue[:n])
	rest := copy(c.queue, c.queue[n:])
	clear(c.queue[rest:])
	c.queue = c.queue[:rest]
	c.mu.Unlock()
	batch[0].lead = batch
	close(batch[0].wake)
}

// lead sends the scripts of w.lead, whose first waiter is w, as one
// pipeline, hands the queue on and answers the others.
func (s *Store) lead(w *waiter) {
	batch := w.lead
	var (
		calls    []call
		live     = batch[:0:0]
		deadline time.Time
	)
	for _, o := range batch {
		if o.ctx.Err() != nil { // a caller gone already: its scripts are not sent
			continue
		}
		live = append(live, o)
		calls = append(calls, o.calls...)
		if d, _ := o.ctx.Deadline(); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	if len(calls) > 0 {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		replies := s.send(ctx, calls)
		cancel()
		i := 0
		for _, o := range live {
			o.replies = replies[i : i+len(o.calls) : i+len(o.calls)]
			i += len(o.calls)
		}
		others := len(calls)
		if len(live) > 0 && live[0] == w {
			others -= len(w.calls)
		}
		s.comb.combined.Add(uint64(others))
	}
	s.next()
	for _, o := range batch[1:] {
		close(o.wake)
	}
}

// send runs calls: one alone, several as one pipeline. A script that Redis
// does not have cached (after a restart or SCRIPT FLUSH) is run again
// alone, which loads it.
func (s *Store) send(ctx context.Context, calls []call) []reply {
	out := make([]reply, len(calls))
	if len(calls) == 1 {
		c := calls[0]
		out[0] = checked(c.script.Run(ctx, s.rdb, c.keys, c.args...).Slice())
		return out
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command, read below
	for i, c := range calls {
		v, err := cmds[i].Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			v, err = c.script.Run(ctx, s.rdb, c.keys, c.args...).Slice()
		}
		out[i] = checked(v, err)
	}
	return out
}

// checked maps a script's reply to a reply whose error is ErrUnavailable.
func checked(v []any, err error) reply {
	switch {
	case err != nil:
		return reply{err: fmt.Errorf("%w: %w", ErrUnavailable, err)}
	case len(v) == 0:
		return reply{err: fmt.Errorf("%w: empty script reply", ErrUnavailable)}
	}
	return reply{v: v}
}

// failed is n replies failing with err (a caller's context that ended).
func failed(n int, err error) []reply {
	out := make([]reply, n)
	for i := range out {
		out[i].err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return out
}
