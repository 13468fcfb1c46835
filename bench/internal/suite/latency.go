package suite

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
	"github.com/scsync/scsync/bench/internal/stats"
)

// Latency measures replication latency both ways at a steady rate.
var Latency = Bench{
	Name: "latency",
	Doc:  "at a steady rate: commit on the clinic → visible in the cloud, and cloud change → applied in the clinic (p50/p99), vs a bare publish → consume → insert round trip at the same rate",
	Flags: func(fs *flag.FlagSet) RunFunc {
		rate := fs.Int("rate", 200, "changes per second")
		dur := fs.Duration("duration", 15*time.Second, "how long each direction (and the baseline) runs")
		size := fs.Int("size", 1024, "approximate JSON size of a record's content, bytes")
		load := fs.Bool("cpu-load", false, "keep one core busy with a second process for the whole run (baseline and ours), as a busy clinic PC would")
		prof := fs.String("cpuprofile", "", "write a CPU profile of sc-cloud (SCSYNC_PPROF=1) over the cloud → clinic run to this file (go tool pprof)")
		return func(ctx context.Context, c Config) ([]results.Result, error) {
			return runLatency(ctx, c, *rate, *dur, *size, *load, *prof)
		}
	},
}

// arrivals records when each record's event was first seen.
type arrivals struct {
	mu   sync.Mutex
	seen map[string]time.Time
	typ  string
}

func newArrivals(typ string) *arrivals { return &arrivals{seen: map[string]time.Time{}, typ: typ} }

func (a *arrivals) note(e wsEvent, at time.Time) {
	if e.Type != a.typ {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.seen[e.Record]; !ok {
		a.seen[e.Record] = at
	}
}

func (a *arrivals) get(id string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.seen[id]
	return t, ok
}

func runLatency(ctx context.Context, c Config, rate int, dur time.Duration, size int, load bool, prof string) ([]results.Result, error) {
	var cl stack.Cleanup
	defer cl.Close()
	if load {
		p, err := startChild(&cl, childCPULoad)
		if err != nil {
			return nil, fmt.Errorf("cpu load: %w", err)
		}
		c.Log.Info("a second process keeps one core busy", "pid", p.Pid())
	}
	base, err := bareLatency(ctx, c, rate, dur, size)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	var extra []string
	if prof != "" {
		extra = append(extra, "SCSYNC_PPROF=1")
	}
	a, err := stack.NewAppliance(ctx, &cl, c.Env, c.Bin, "latency", extra...)
	if err != nil {
		return nil, err
	}
	clinic, err := a.Enroll(ctx, "Bench Latency Dental")
	if err != nil {
		return nil, err
	}
	if err := a.StartLocal(ctx, clinic); err != nil {
		return nil, err
	}

	// Up: the cloud tells its viewers "changed" right after the commit
	// that accepted a clinic change (on the node that applied it).
	upSeen := newArrivals("changed")
	cv, err := dialViewer(ctx, clinic.CloudPrefix(a.Cloud)+"events?access_token="+a.AdminToken, upSeen.note)
	if err != nil {
		return nil, err
	}
	defer cv.Close()
	up, err := paced(ctx, rate, dur, size, clinic.Base+"/v1/patients", "", upSeen)
	if err != nil {
		return nil, fmt.Errorf("up: %w", err)
	}
	c.Log.Info("clinic → cloud done", "p50_ms", stats.Millis(up.sum.P50), "p99_ms", stats.Millis(up.sum.P99), "missing", up.missing)
	// Where the time goes: the cloud's own acceptance time of each change.
	accepted, err := acceptedTimes(ctx, a.PGURL, up.sent)
	if err != nil {
		return nil, err
	}

	// Down: sc-local tells its viewers "changed" right after it applied a
	// cloud change.
	downSeen := newArrivals("changed")
	lv, err := dialViewer(ctx, clinic.Base+"/v1/events?access_token="+stack.LocalAPIToken, downSeen.note)
	if err != nil {
		return nil, err
	}
	defer lv.Close()
	profDone := make(chan error, 1)
	if prof != "" {
		go func() { profDone <- cpuProfile(ctx, a.Cloud, a.AdminToken, prof, dur) }()
	}
	down, err := paced(ctx, rate, dur, size, clinic.CloudPrefix(a.Cloud)+"patients", a.AdminToken, downSeen)
	if err != nil {
		return nil, fmt.Errorf("down: %w", err)
	}
	if prof != "" {
		if err := <-profDone; err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
	}
	up.reconnects, down.reconnects = cv.Reconnects.Load(), lv.Reconnects.Load()
	// How the cloud's group commit gathered the saves (older builds have no
	// such metric: left out).
	commits, cerr := stack.Gauge(ctx, a.Cloud, "scsync_cloud_save_commits_total")
	saves, serr := stack.Gauge(ctx, a.Cloud, "scsync_cloud_saves_total")
	c.Log.Info("cloud → clinic done", "p50_ms", stats.Millis(down.sum.P50), "p99_ms", stats.Millis(down.sum.P99), "missing", down.missing)

	params := map[string]any{"rate_per_s": rate, "duration_s": dur.Seconds(), "record_bytes": size, "cpu_load": load}
	var out []results.Result
	for _, d := range []struct {
		name, note string
		m          pacedResult
	}{
		{"replication_latency_up_p50", "clinic → cloud: from sending POST /v1/patients to sc-local until a cloud viewer (WebSocket) gets the record's \"changed\" event, sent right after the cloud's commit", up},
		{"replication_latency_down_p50", "cloud → clinic: from sending POST …/patients to sc-cloud until a clinic viewer (WebSocket) gets the \"changed\" event sc-local sends right after applying it", down},
	} {
		r := results.New("latency", d.name, "ms", results.LowerBetter, round3(stats.Millis(d.m.sum.P50)), round3(stats.Millis(base.P50)))
		r.OursLatency, r.BaselineLatency = latency(d.m.sum), latency(base)
		r.Params = params
		r.Extra = map[string]float64{"missing_events": float64(d.m.missing), "achieved_rate_per_s": round1(d.m.rate),
			"viewer_dropped_by_hub": float64(d.m.reconnects),
			"ours_post_p50_ms":      round3(stats.Millis(d.m.api.P50)), "ours_post_p99_ms": round3(stats.Millis(d.m.api.P99))}
		r.Note = d.note + "; baseline: publish with confirm (quorum queue) → consume → INSERT commit into PostgreSQL, same rate and size"
		out = append(out, r)
	}
	if cerr == nil && serr == nil && commits > 0 {
		out[1].Extra["ours_cloud_saves_per_commit"] = round1(saves / commits)
	}
	out[0].Extra["ours_cloud_accepted_p50_ms"] = round3(stats.Millis(accepted.P50))
	out[0].Extra["ours_cloud_accepted_p99_ms"] = round3(stats.Millis(accepted.P99))
	return out, nil
}

type pacedResult struct {
	sent       map[string]time.Time // record id → request start
	sum        stats.Summary
	api        stats.Summary // the POST's own round trip (its commit)
	missing    int
	rate       float64
	reconnects int64
}

// paced POSTs records to url at rate for dur and returns the latency from
// each request's start to the record's arrival in seen.
func paced(ctx context.Context, rate int, dur time.Duration, size int, url, token string, seen *arrivals) (pacedResult, error) {
	type sent struct {
		id  string
		at  time.Time
		rtt time.Duration
	}
	var mu sync.Mutex
	var all []sent
	var failed atomic.Value
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	n := 0
	for time.Since(start) < dur {
		select {
		case <-ctx.Done():
			return pacedResult{}, ctx.Err()
		case <-tick.C:
		}
		n++
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			var rec struct {
				ID string `json:"id"`
			}
			t0 := time.Now()
			if err := stack.Call(ctx, http.MethodPost, url, token, map[string]any{"data": barePatient(n, size)}, &rec, http.StatusCreated); err != nil {
				failed.Store(err)
				return
			}
			rtt := time.Since(t0)
			mu.Lock()
			all = append(all, sent{rec.ID, t0, rtt})
			mu.Unlock()
		}(n)
	}
	wg.Wait()
	achieved := stats.Rate(int64(n), time.Since(start))
	if err, ok := failed.Load().(error); ok {
		return pacedResult{}, err
	}
	// Wait for the stragglers.
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		for _, s := range all {
			if _, ok := seen.get(s.id); !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			var samples, rtts []time.Duration
			starts := make(map[string]time.Time, len(all))
			for _, s := range all {
				rtts = append(rtts, s.rtt)
				starts[s.id] = s.at
				if t, ok := seen.get(s.id); ok {
					samples = append(samples, t.Sub(s.at))
				}
			}
			return pacedResult{sent: starts, sum: stats.Summarize(samples), api: stats.Summarize(rtts), missing: missing, rate: achieved}, nil
		}
		select {
		case <-ctx.Done():
			return pacedResult{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// acceptedTimes reads when the cloud accepted each record's change (the
// accepted_at it stores) and returns the delays from the requests' starts.
func acceptedTimes(ctx context.Context, pgURL string, sent map[string]time.Time) (stats.Summary, error) {
	db, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		return stats.Summary{}, err
	}
	defer db.Close()
	rows, err := db.Query(ctx, `SELECT record_id::text, accepted_at FROM changes`)
	if err != nil {
		return stats.Summary{}, fmt.Errorf("read the cloud's changes: %w", err)
	}
	defer rows.Close()
	var ds []time.Duration
	for rows.Next() {
		var id string
		var at time.Time
		if err := rows.Scan(&id, &at); err != nil {
			return stats.Summary{}, err
		}
		if t0, ok := sent[id]; ok {
			ds = append(ds, at.Sub(t0))
		}
	}
	return stats.Summarize(ds), rows.Err()
}

// bareLatency publishes at rate for dur and measures publish start →
// INSERT commit in the bare consumer.
func bareLatency(ctx context.Context, c Config, rate int, dur time.Duration, size int) (stats.Summary, error) {
	var cl stack.Cleanup
	defer cl.Close()
	amqpURL, err := c.Env.Vhost(ctx, &cl, "bench_bare")
	if err != nil {
		return stats.Summary{}, err
	}
	pgURL, err := c.Env.PostgresDB(ctx, &cl, "bench_bare")
	if err != nil {
		return stats.Summary{}, err
	}
	db, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		return stats.Summary{}, err
	}
	defer db.Close()
	if err := bareTable(ctx, db); err != nil {
		return stats.Summary{}, err
	}
	b, err := dialBare(amqpURL, "bare.latency")
	if err != nil {
		return stats.Summary{}, err
	}
	defer b.Close()
	var mu sync.Mutex
	var samples []time.Duration
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	consErr := make(chan error, 1)
	go func() {
		consErr <- b.consume(cctx, 100, 1, 0, func(rows []bareRow) error {
			if err := bareInsert(cctx, db, rows); err != nil {
				return err
			}
			now := time.Now()
			mu.Lock()
			for _, r := range rows {
				samples = append(samples, now.Sub(r.Sent))
			}
			mu.Unlock()
			return nil
		})
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	n := 0
	for time.Since(start) < dur {
		select {
		case <-ctx.Done():
			return stats.Summary{}, ctx.Err()
		case <-tick.C:
		}
		n++
		data, _ := json.Marshal(barePatient(n, size))
		body, _ := json.Marshal(bareRow{ID: int64(n), Sent: time.Now(), Data: data})
		dc, err := b.publish(ctx, body)
		if err != nil {
			return stats.Summary{}, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !dc.Wait() {
				failed.Store(fmt.Errorf("bare: publish nacked"))
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		return stats.Summary{}, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(samples)
		mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			return stats.Summary{}, fmt.Errorf("bare consumer inserted %d of %d", got, n)
		}
		select {
		case err := <-consErr:
			return stats.Summary{}, fmt.Errorf("bare consumer stopped: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return stats.Summarize(samples), nil
}

const childCPULoad = "cpu-load"

// cpuSink keeps cpuLoad's arithmetic from being optimized away.
var cpuSink atomic.Uint64

// cpuLoad keeps one core busy until ctx ends (the benchmark's SIGTERM).
func cpuLoad(ctx context.Context) error {
	runtime.GOMAXPROCS(1)
	x := uint64(1)
	for ctx.Err() == nil {
		for range 1 << 20 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		cpuSink.Store(x)
	}
	return nil
}
