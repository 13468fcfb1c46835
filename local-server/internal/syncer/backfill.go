package syncer

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scsync/scsync/local-server/internal/store"
)

// Progress is the backfill's progress (M8), for the API, metrics and CLI.
type Progress struct {
	// Remaining is how many records the scope covers that the cloud does
	// not have yet (0: nothing to backfill): those not queued yet plus
	// InFlight, those queued and not yet confirmed by the cloud.
	Remaining int64 `json:"remaining"`
	InFlight  int64 `json:"in_flight"`
	// Queued counts records (and payload bytes) the backfill handed to the
	// relay since this process started.
	Queued      int64 `json:"queued"`
	QueuedBytes int64 `json:"queued_bytes"`
	// RatePerSecond is records per second over the last minute; ETASeconds
	// is Remaining at that rate (0 when unknown).
	RatePerSecond float64 `json:"rate_per_second"`
	ETASeconds    float64 `json:"eta_seconds"`
	// Waiting is true while live changes go first.
	Waiting bool `json:"waiting_for_live_changes"`
	// Measured is false until the backfill first counted its work after
	// the start (the other figures are then not known yet).
	Measured bool `json:"measured"`
}

type backfiller struct {
	mu      sync.Mutex
	p       Progress
	history []sample // (time, queued) over the last minute

	remaining prometheus.Gauge
	queued    prometheus.Counter
	bytes     prometheus.Counter
}

type sample struct {
	at     time.Time
	queued int64
}

func newBackfiller(reg prometheus.Registerer) *backfiller {
	b := &backfiller{
		remaining: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "scsync", Subsystem: "local", Name: "backfill_remaining_records", Help: "Records the sync scope covers that the cloud does not have yet."}),
		queued:    prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "backfill_queued_records_total", Help: "Records the backfill queued for the cloud."}),
		bytes:     prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "backfill_queued_bytes_total", Help: "Payload bytes the backfill queued for the cloud."}),
	}
	if reg != nil {
		reg.MustRegister(b.remaining, b.queued, b.bytes)
	}
	return b
}

// Backfill returns the backfill's progress; just after the start, before
// the loop has counted, it counts now. What is in flight changes as the
// relay publishes, between the loop's rounds: it is read now (a count of
// the outbox, on the reader connection).
func (s *Syncer) Backfill() Progress {
	s.bf.mu.Lock()
	p := s.bf.p
	s.bf.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if p.Measured {
		if _, inflight, err := s.st.OutboxLanes(ctx); err == nil {
			p.Remaining = max(p.Remaining-p.InFlight, 0) + inflight
			p.InFlight = inflight
		}
		return p
	}
	remaining, err := s.st.BackfillRemaining(ctx)
	if err != nil {
		return p
	}
	live, inflight, err := s.st.OutboxLanes(ctx)
	if err != nil {
		return p
	}
	s.bf.update(remaining+inflight, inflight, live >= liveFirst, 0, 0)
	s.bf.mu.Lock()
	defer s.bf.mu.Unlock()
	return s.bf.p
}

// liveFirst is how many live changes may wait before the backfill pauses.
const liveFirst = 50

// aheadMax is how many backfill changes may wait for the relay, and the
// window (at least sentMin, at most sentMax) how many, sent, may wait for
// the cloud's acknowledgment: enough to keep both busy, few enough that
// progress tracks what the cloud has and a live change overtakes the
// backfill within about a second (in the broker it waits behind at most
// the window). The window is a second of acknowledgments at the rate the
// cloud has been acknowledging (windowTime): it grows while the round
// trip is shorter than that and the pipe takes more, and shrinks when the
// cloud slows down.
const (
	aheadMax   = 4 * backfillBatch
	sentMin    = 4000
	sentMax    = 40000
	windowTime = time.Second
)

// backfillBatch is how many records one backfill transaction queues.
const backfillBatch = 1000

// recountEvery is how often the backfill counts its remaining work while it
// runs (counting scans every table: on a million-record history that is a
// good part of a second); in between it subtracts what it queued. Idle, it
// counts when kicked (a scope change, an import) or every idleRecount.
const (
	recountEvery = 30 * time.Second
	idleRecount  = 30 * time.Second
)

// backfill queues what the scope newly covers, newest first, a batch at a
// time, while live changes are few (two lanes: live changes always go
// first) and the relay keeps up. It resumes by itself after a restart.
//
// A batch is read on a snapshot (the reader connection) and then written
// by the one writer; while one batch is written the next is read, after
// it (store.PlanBackfill), so the writer does not wait for the reads.
func (s *Syncer) backfill(ctx context.Context) {
	var remaining int64
	var counted time.Time
	// next: the batch read while the last one was written, to write next
	// (nil: read one first). It is dropped whenever the loop stops for
	// more than the relay or the cloud: the records it read may change
	// meanwhile (its write would find them changed and read again).
	var next *store.BackfillPlan
	for ctx.Err() == nil {
		if time.Since(counted) > recountEvery {
			n, err := s.st.BackfillRemaining(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("backfill: counting failed", "err", err)
				}
				next = nil
				sleep(ctx, 5*time.Second)
				continue
			}
			remaining, counted = n, time.Now()
		}
		live, inflight, err := s.st.OutboxLanes(ctx)
		if err != nil {
			next = nil
			sleep(ctx, 5*time.Second)
			continue
		}
		s.bf.update(remaining+inflight, inflight, live >= liveFirst, 0, 0)
		switch {
		case remaining == 0 && next == nil:
			if inflight > 0 {
				sleep(ctx, time.Second) // progress: watch the last ones go
				continue
			}
			t := time.NewTimer(idleRecount)
			select {
			case <-ctx.Done():
			case <-s.kick:
			case <-t.C:
			}
			t.Stop()
			counted = time.Time{}
			continue
		case live >= liveFirst:
			next = nil
			sleep(ctx, 200*time.Millisecond)
			continue
		case s.st.Importing():
			// History is still coming in: newest first means over all of it.
			next = nil
			sleep(ctx, time.Second)
			counted = time.Time{}
			continue
		case inflight >= aheadMax || s.unacknowledged() >= s.window():
			// The outbox, or the broker, holds enough: a live change
			// published now waits behind no more than the window.
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		plan := next
		next = nil
		if plan == nil {
			plan, err = s.st.PlanBackfill(ctx, backfillBatch, nil)
			if err != nil {
				s.batchFailed(ctx, err)
				continue
			}
		}
		if plan.Records() == 0 {
			if remaining > 0 {
				sleep(ctx, time.Second) // the count was stale: count again, not in a tight loop
			}
			remaining, counted = 0, time.Time{}
			continue
		}
		b, after, err := s.writeBackfill(ctx, plan)
		if err != nil {
			s.batchFailed(ctx, err)
			continue
		}
		next = after
		remaining = max(remaining-int64(b.Records), 0)
		s.bf.update(remaining+inflight+int64(b.Records), inflight+int64(b.Records), false, int64(b.Records), b.Bytes)
		s.Notify()
	}
}

// writeBackfill writes plan and, meanwhile, reads the batch after it. That
// one is returned (else nil) only if plan was written exactly as read: the
// batch after it took plan's records for queued.
func (s *Syncer) writeBackfill(ctx context.Context, plan *store.BackfillPlan) (store.BackfillBatch, *store.BackfillPlan, error) {
	var after *store.BackfillPlan
	var afterErr error
	read := make(chan struct{})
	go func() {
		defer close(read)
		after, afterErr = s.st.PlanBackfill(ctx, backfillBatch, plan)
	}()
	b, exact, err := s.st.CommitBackfill(ctx, plan)
	<-read
	if err != nil || !exact || afterErr != nil || after.Records() == 0 {
		// An empty plan after plan's last ends the chain: the next batch is
		// read from the newest again, which finds what became a candidate
		// before plan's last meanwhile, or finds nothing.
		return b, nil, err
	}
	return b, after, nil
}

func (s *Syncer) batchFailed(ctx context.Context, err error) {
	if ctx.Err() == nil {
		s.log.Warn("backfill batch failed; will retry", "err", err)
	}
	sleep(ctx, 5*time.Second)
}

func (b *backfiller) update(remaining, inflight int64, waiting bool, queued, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	remaining = max(remaining, 0)
	now := time.Now()
	b.p.Remaining, b.p.InFlight, b.p.Waiting, b.p.Measured = remaining, inflight, waiting, true
	b.p.Queued += queued
	b.p.QueuedBytes += bytes
	b.history = append(b.history, sample{now, b.p.Queued})
	for len(b.history) > 1 && now.Sub(b.history[0].at) > time.Minute {
		b.history = b.history[1:]
	}
	b.p.RatePerSecond, b.p.ETASeconds = 0, 0
	if first := b.history[0]; now.Sub(first.at) > time.Second {
		b.p.RatePerSecond = float64(b.p.Queued-first.queued) / now.Sub(first.at).Seconds()
	}
	if b.p.RatePerSecond > 0 {
		b.p.ETASeconds = float64(remaining) / b.p.RatePerSecond
	}
	b.remaining.Set(float64(remaining))
	b.queued.Add(float64(queued))
	b.bytes.Add(float64(bytes))
}

// window is how many sent backfill changes may wait for the cloud's
// acknowledgment now: windowTime of acknowledgments at the recent rate,
// within [sentMin, sentMax].
func (s *Syncer) window() int64 {
	perSecond := s.rate.perSecond(time.Now())
	return min(max(int64(perSecond*windowTime.Seconds()), sentMin), sentMax)
}

// ackRate is the rate of the cloud's acknowledgments of backfill changes
// over the last few seconds (a ring of per-second counts).
type ackRate struct {
	mu     sync.Mutex
	counts [ackSeconds]int64
	at     [ackSeconds]int64 // the unix second each count is of
}

const ackSeconds = 4

func (r *ackRate) add(now time.Time, n int64) {
	sec := now.Unix()
	i := sec % ackSeconds
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at[i] != sec {
		r.at[i], r.counts[i] = sec, 0
	}
	r.counts[i] += n
}

// perSecond is the mean over the last ackSeconds-1 whole seconds.
func (r *ackRate) perSecond(now time.Time) float64 {
	sec := now.Unix()
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for i := range r.at {
		if d := sec - r.at[i]; d >= 1 && d < ackSeconds {
			n += r.counts[i]
		}
	}
	return float64(n) / (ackSeconds - 1)
}
