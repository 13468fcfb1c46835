package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

// TestCombinedOutcomes runs many concurrent acquires, renews and releases,
// single and in batches, on a few contended resources and on each worker's
// own, so that most go to Redis in pipelines other callers send, and checks
// that every caller gets its own script's outcome: one holder per resource
// at a time, fencing tokens that only grow, a holder's renewals granted and
// anyone else's renewals and releases refused.
func TestCombinedOutcomes(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, false)
	ctx := context.Background()
	const (
		clinic  = ids.ID(42)
		workers = 16
		rounds  = 60
		hot     = 3 // contended resources
	)
	var (
		mu      sync.Mutex
		holder  = map[string]string{}           // resource → user holding it now
		last    = map[string]int64{}            // resource → last token granted
		granted = map[string]map[int64]string{} // resource → token → user
	)
	grant := func(res, user string, tok int64) error {
		mu.Lock()
		defer mu.Unlock()
		if h := holder[res]; h != "" {
			return fmt.Errorf("%s granted %s (token %d) while %s holds it", user, res, tok, h)
		}
		if tok <= last[res] {
			return fmt.Errorf("%s granted %s token %d, not above the last one %d", user, res, tok, last[res])
		}
		holder[res], last[res] = user, tok
		if granted[res] == nil {
			granted[res] = map[int64]string{}
		}
		granted[res][tok] = user
		return nil
	}
	// denied keeps a refusal, checked at the end (its grant may be noted
	// after it) against the grants.
	type refusal struct {
		res string
		l   lockapi.Lock
	}
	var refusals []refusal
	denied := func(res string, l lockapi.Lock) error {
		mu.Lock()
		defer mu.Unlock()
		refusals = append(refusals, refusal{res, l})
		return nil
	}
	letGo := func(res string) {
		mu.Lock()
		holder[res] = ""
		mu.Unlock()
	}

	// lockCycle holds res (if free) as user: renew, a stranger's renew and
	// release, release, and the release again.
	lockCycle := func(res, user string, batch bool) error {
		req := acquireReq(clinic, res, user)
		var (
			g   lockapi.Grant
			err error
		)
		if batch {
			r := s.Batch(ctx, []Op{{Acquire: &req, TTL: 30 * time.Second}})[0]
			g, err = r.Grant, r.Err
		} else {
			g, err = s.Acquire(ctx, req, 30*time.Second)
		}
		var he *HeldError
		if errors.As(err, &he) {
			return denied(res, he.Lock)
		}
		if err != nil {
			return fmt.Errorf("Acquire(%s) by %s = %w", res, user, err)
		}
		if g.Resource != res || g.Holder.User != user {
			return fmt.Errorf("Acquire(%s) by %s = a grant of %s to %s", res, user, g.Resource, g.Holder.User)
		}
		if err := grant(res, user, g.Token); err != nil {
			return err
		}
		rn, err := s.Renew(ctx, clinic, res, g.Token, g.Secret, time.Minute)
		if err != nil || rn.Token != g.Token || rn.Resource != res {
			return fmt.Errorf("Renew(%s, %d) by its holder %s = %+v, %w", res, g.Token, user, rn, err)
		}
		stranger := g.Secret[1:] + "0"
		if _, err := s.Renew(ctx, clinic, res, g.Token, stranger, time.Minute); !errors.Is(err, ErrNotYours) {
			return fmt.Errorf("Renew(%s) with another secret = %w, want ErrNotYours", res, err)
		}
		rel := lockapi.ReleaseRequest{Resource: res, Clinic: clinic, Token: g.Token, Secret: stranger}
		if r := s.Batch(ctx, []Op{{Release: &rel}})[0]; !errors.Is(r.Err, ErrNotYours) {
			return fmt.Errorf("Release(%s) with another secret = %w, want ErrNotYours", res, r.Err)
		}
		letGo(res)
		if batch {
			rel.Secret = g.Secret
			err = s.Batch(ctx, []Op{{Release: &rel}})[0].Err
		} else {
			err = s.Release(ctx, clinic, res, g.Token, g.Secret, "")
		}
		if err != nil {
			return fmt.Errorf("Release(%s, %d) by its holder %s = %w", res, g.Token, user, err)
		}
		if err := s.Release(ctx, clinic, res, g.Token, g.Secret, ""); !errors.Is(err, ErrExpired) {
			return fmt.Errorf("second Release(%s, %d) = %w, want ErrExpired", res, g.Token, err)
		}
		return nil
	}

	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			user := fmt.Sprintf("user%d", w)
			for i := range rounds {
				res := fmt.Sprintf("patient/hot%d", (w+i)%hot)
				if i%3 == 2 {
					res = fmt.Sprintf("patient/own%d", w)
				}
				if err := lockCycle(res, user, (w+i)%2 == 0); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, r := range refusals {
		if u, ok := granted[r.res][r.l.Token]; !ok || u != r.l.Holder.User || r.l.Resource != r.res {
			t.Errorf("acquire of %s refused for a holder %s with token %d that it was never granted to (%q)", r.res, r.l.Holder.User, r.l.Token, u)
		}
	}
	combined, held := s.Combined(), len(refusals)
	t.Logf("%d scripts combined, %d acquires refused as held", combined, held)
	if combined == 0 {
		t.Errorf("Combined() = 0: no script went in another caller's pipeline; the test did not test combining")
	}
	if held == 0 {
		t.Errorf("no acquire was refused: the hot resources were not contended")
	}
	for w := range workers {
		res := fmt.Sprintf("patient/own%d", w)
		if len(granted[res]) != rounds/3 {
			t.Errorf("%s granted %d times, want %d (its only user locks it %d times)", res, len(granted[res]), rounds/3, rounds/3)
		}
	}
}

// slowStore returns a Store whose Redis is behind a proxy that delays
// every chunk by delay each way.
func slowStore(t *testing.T, delay time.Duration) *Store {
	t.Helper()
	_, prefix := testenv.Redis(t) // the prefix, cleaned up after
	p := testenv.NewProxy(t, testenv.RedisAddr())
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, ReadTimeout: 10 * time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	p.SetDelay(delay)
	return New(rdb, Options{Prefix: prefix, NodePrefix: prefix, Timeout: 10 * time.Second, NodeTTL: nodeTTL, Quarantine: quarantine})
}

// queued is how many callers wait for the call in flight.
func queued(s *Store) int {
	s.comb.mu.Lock()
	defer s.comb.mu.Unlock()
	return len(s.comb.queue)
}

// TestCombinedCallerGoes: a caller whose context ends returns at once,
// whether its script is still queued behind a call in flight (it is then
// never sent) or already in a pipeline in flight; the others get their
// outcomes, and the store goes on combining.
func TestCombinedCallerGoes(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond // each way: a call takes 600 ms
	s := slowStore(t, delay)
	ctx := context.Background()
	type outcome struct {
		g   lockapi.Grant
		err error
	}
	acquire := func(ctx context.Context, res string) chan outcome {
		ch := make(chan outcome, 1)
		go func() {
			g, err := s.Acquire(ctx, acquireReq(7, res, "anna"), 30*time.Second)
			ch <- outcome{g, err}
		}()
		return ch
	}
	waitQueued := func(n int) {
		t.Helper()
		testenv.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
			if q := queued(s); q != n {
				return fmt.Errorf("%d callers queued, want %d", q, n)
			}
			return nil
		})
	}
	gone := func(name string, cancel context.CancelFunc, ch chan outcome) {
		t.Helper()
		start := time.Now()
		cancel()
		select {
		case o := <-ch:
			if !errors.Is(o.err, ErrUnavailable) || !errors.Is(o.err, context.Canceled) {
				t.Errorf("%s: Acquire = %+v, %v, want ErrUnavailable (context canceled)", name, o.g, o.err)
			}
			if d := time.Since(start); d > delay/2 {
				t.Errorf("%s: Acquire returned %v after its context ended, want at once", name, d)
			}
		case <-time.After(delay):
			t.Fatalf("%s: Acquire still waiting %v after its context ended", name, delay)
		}
	}

	first := acquire(ctx, "patient/1") // alone: in flight at once
	waitQueued(0)
	time.Sleep(delay / 3)
	qctx, qcancel := context.WithCancel(ctx)
	dropped := acquire(qctx, "patient/2") // queued behind the first
	second := acquire(ctx, "patient/3")
	waitQueued(2)
	gone("queued caller", qcancel, dropped)
	waitQueued(1)

	// When the first call returns, the second goes (nothing else was
	// queued); the third and fourth queue behind it and then go as one
	// pipeline, which the third sends. The fourth's caller goes while it
	// is in flight.
	if o := <-first; o.err != nil || o.g.Resource != "patient/1" {
		t.Fatalf("first Acquire = %+v, %v, want a grant of patient/1", o.g, o.err)
	}
	third := acquire(ctx, "patient/4")
	waitQueued(1)
	fctx, fcancel := context.WithCancel(ctx)
	fourth := acquire(fctx, "patient/5")
	waitQueued(2)
	if o := <-second; o.err != nil || o.g.Resource != "patient/3" {
		t.Fatalf("second Acquire = %+v, %v, want a grant of patient/3", o.g, o.err)
	}
	waitQueued(0)
	time.Sleep(delay / 3)
	gone("caller in flight", fcancel, fourth)
	if o := <-third; o.err != nil || o.g.Resource != "patient/4" {
		t.Fatalf("third Acquire = %+v, %v, want a grant of patient/4", o.g, o.err)
	}

	// The dropped caller's script never ran; the fourth's did (it was in
	// flight), as an abandoned request's may.
	s2 := New(s.rdb, s.opts)
	if _, err := s2.Inspect(ctx, 7, "patient/2"); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Inspect(patient/2) = %v, want ErrNotHeld: a caller that left the queue had its acquire sent", err)
	}
	checkFor := func() error {
		st, err := s2.Inspect(ctx, 7, "patient/5")
		if err != nil || st.Holder.User != "anna" {
			return fmt.Errorf("Inspect(patient/5) = %+v, %w, want anna's lock", st, err)
		}
		return nil
	}
	testenv.CheckFor(t, 5*time.Second, 10*time.Millisecond, checkFor)
	if n := s.Combined(); n != 1 {
		t.Errorf("Combined() = %d, want 1 (the fourth's acquire)", n)
	}
	// And the store still works, alone.
	if o := <-acquire(ctx, "patient/6"); o.err != nil {
		t.Errorf("Acquire after = %v", o.err)
	}
}

// TestCombinedWokenGone: a queued caller whose context ends as the call in
// flight returns, whichever comes first, gets its context's error (its
// script not sent) or its script's outcome, and leaves the store idle.
func TestCombinedWokenGone(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, false)
	idle := func() error {
		s.comb.mu.Lock()
		defer s.comb.mu.Unlock()
		if s.comb.busy || len(s.comb.queue) > 0 {
			return errors.New("the store is still busy")
		}
		return nil
	}
	for range 300 {
		s.comb.mu.Lock()
		s.comb.busy = true // a call in flight
		s.comb.mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Release(ctx, 42, "patient/none", 1, "secret", "") }()
		testenv.CheckFor(t, 5*time.Second, 50*time.Microsecond, func() error {
			if queued(s) != 1 {
				return errors.New("the release is not queued")
			}
			return nil
		})
		go cancel()
		s.next() // the call in flight returns
		if err := <-done; !errors.Is(err, context.Canceled) && !errors.Is(err, ErrExpired) {
			t.Fatalf("Release = %v, want context.Canceled or ErrExpired", err)
		}
		testenv.CheckFor(t, 5*time.Second, time.Millisecond, idle)
	}
}
