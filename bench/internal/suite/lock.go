package suite

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
	"github.com/scsync/scsync/bench/internal/stats"
	lockclient "github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
)

// Lock measures an acquire+release through lockd against the same on bare
// Redis.
var Lock = Bench{
	Name: "lock",
	Doc:  "acquire+release through lockd (HTTP, Lua, fencing) vs a bare SET NX PX + compare-and-delete on the same Redis",
	Flags: func(fs *flag.FlagSet) RunFunc {
		ops := fs.Int("latency-ops", 2000, "sequential acquire+release pairs for the latency figure")
		conc := fs.Int("concurrency", 8, "concurrent clients for the throughput figure")
		dur := fs.Duration("duration", 5*time.Second, "how long the throughput phase runs")
		prof := fs.String("cpuprofile", "", "write CPU profiles over lockd's throughput phase: of lockd to this file, of this process (the client side) to this file + .client (go tool pprof)")
		return func(ctx context.Context, c Config) ([]results.Result, error) {
			return runLock(ctx, c, *ops, *conc, *dur, *prof)
		}
	},
}

// pairFunc does one acquire+release on resource by worker w.
type pairFunc func(ctx context.Context, resource string) error

func runLock(ctx context.Context, c Config, ops, conc int, dur time.Duration, prof string) ([]results.Result, error) {
	var cl stack.Cleanup
	defer cl.Close()
	rdb, prefix, err := c.Env.RedisPrefix(ctx, &cl, "bench_lock")
	if err != nil {
		return nil, err
	}
	const clinicID = "4242"
	tok := stack.Name("clinic-token")
	var extra []string
	if prof != "" {
		extra = append(extra, "SCSYNC_PPROF=1")
	}
	base, proc, err := stack.StartLockd(ctx, &cl, c.Env, c.Bin, "", prefix+"lockd:", stack.Name("service_token"), map[string]string{tok: clinicID}, extra...)
	if err != nil {
		return nil, err
	}
	lc := lockclient.New(base, tok, stack.HTTP)
	clinic, err := ids.Parse(clinicID)
	if err != nil {
		return nil, err
	}
	ours := func(ctx context.Context, resource string) error {
		g, err := lc.Acquire(ctx, lockapi.AcquireRequest{Resource: resource, TTLMillis: 30000, Version: "1.0",
			Holder: lockapi.Holder{Clinic: clinic, Side: lockapi.SideLocal, Client: "bench", User: "bench"}})
		if err != nil {
			return err
		}
		return lc.Release(ctx, lockapi.ReleaseRequest{Resource: resource, Clinic: clinic, Token: g.Token, Secret: g.Secret})
	}
	cad := redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`)
	bare := func(ctx context.Context, resource string) error {
		key, secret := prefix+"bare:"+resource, stack.Name("s")
		ok, err := rdb.SetNX(ctx, key, secret, 30*time.Second).Result()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("bare lock %s held", key)
		}
		n, err := cad.Run(ctx, rdb, []string{key}, secret).Int()
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("bare release of %s deleted %d keys", key, n)
		}
		return nil
	}
	// Warm both paths (connections, script cache).
	for i := range 50 {
		if err := ours(ctx, "patient/warm"+strconv.Itoa(i)); err != nil {
			return nil, fmt.Errorf("lockd: %w", err)
		}
		if err := bare(ctx, "patient/warm"+strconv.Itoa(i)); err != nil {
			return nil, err
		}
	}
	oursLat, bareLat, err := lockLatency(ctx, ours, bare, ops)
	if err != nil {
		return nil, err
	}
	stopProf, err := profileBoth(ctx, base, prof, dur)
	if err != nil {
		return nil, err
	}
	redis0, err := redisCPU(ctx, rdb)
	if err != nil {
		return nil, err
	}
	cpu0, err := cpuOf(proc.Pid(), os.Getpid())
	if err != nil {
		return nil, err
	}
	oursRate, oursPairs, err := lockThroughput(ctx, ours, conc, dur)
	if err != nil {
		return nil, fmt.Errorf("lockd: %w", err)
	}
	cpu1, err := cpuOf(proc.Pid(), os.Getpid())
	if err != nil {
		return nil, err
	}
	redis1, err := redisCPU(ctx, rdb)
	if err != nil {
		return nil, err
	}
	if err := stopProf(); err != nil {
		return nil, err
	}
	redis2, err := redisCPU(ctx, rdb)
	if err != nil {
		return nil, err
	}
	bareRate, barePairs, err := lockThroughput(ctx, bare, conc, dur)
	if err != nil {
		return nil, err
	}
	cpu2, err := cpuOf(os.Getpid())
	if err != nil {
		return nil, err
	}
	redis3, err := redisCPU(ctx, rdb)
	if err != nil {
		return nil, err
	}
	params := map[string]any{"latency_ops": ops, "concurrency": conc, "duration_s": dur.Seconds()}
	lat := results.New("lock", "lock_latency_p50", "ms", results.LowerBetter, round3(stats.Millis(oursLat.P50)), round3(stats.Millis(bareLat.P50)))
	lat.OursLatency, lat.BaselineLatency = latency(oursLat), latency(bareLat)
	lat.Params = params
	lat.Note = "one acquire+release pair, sequential, ours and the baseline timed in alternating blocks of 100 pairs; ours: lockd client → lockd HTTP → Redis Lua (fencing INCR, holder record); baseline: go-redis SET NX PX + Lua compare-and-delete"
	thr := results.New("lock", "lock_throughput", "pairs/s", results.HigherBetter, round1(oursRate), round1(bareRate))
	thr.Params = params
	// CPU per pair says what each side costs whatever the machine's load,
	// which moves the rates themselves a lot on a shared machine.
	perPair := func(d time.Duration, pairs int) float64 {
		return round1(float64(d.Microseconds()) / float64(max(pairs, 1)))
	}
	thr.Extra = map[string]float64{
		"lockd_cpu_us_per_pair":           perPair(cpu1[0]-cpu0[0], oursPairs),
		"client_cpu_us_per_pair":          perPair(cpu1[1]-cpu0[1], oursPairs),
		"baseline_client_cpu_us_per_pair": perPair(cpu2[0]-cpu1[1], barePairs),
		"redis_cpu_us_per_pair":           perPair(redis1-redis0, oursPairs),
		"baseline_redis_cpu_us_per_pair":  perPair(redis3-redis2, barePairs),
	}
	thr.Note = "acquire+release pairs per second with concurrency clients, each on its own resources; extra: CPU (user+system) per pair of lockd and of the client process (ours: the lockd Go client; baseline: go-redis), and of Redis (its INFO cpu, so whatever else uses that Redis meanwhile counts too)"
	return []results.Result{lat, thr}, nil
}

// latencyBlock is how many pairs of one side lockLatency times before it
// turns to the other.
const latencyBlock = 100

// lockLatency times ops sequential pairs of ours and as many of bare, in
// blocks of latencyBlock taking turns, so that both sides see the same
// machine: timed one side after the other, a change of the load between the
// halves (other processes, the CPU's clock) moved the ratio by 2× and more.
func lockLatency(ctx context.Context, ours, bare pairFunc, ops int) (oursLat, bareLat stats.Summary, err error) {
	oursS, bareS := make([]time.Duration, 0, ops), make([]time.Duration, 0, ops)
	for i := 0; i < ops; i += latencyBlock {
		n := min(latencyBlock, ops-i)
		if oursS, err = timePairs(ctx, ours, "patient/", i, n, oursS); err != nil {
			return oursLat, bareLat, fmt.Errorf("lockd: %w", err)
		}
		if bareS, err = timePairs(ctx, bare, "patient/", i, n, bareS); err != nil {
			return oursLat, bareLat, err
		}
	}
	return stats.Summarize(oursS), stats.Summarize(bareS), nil
}

// timePairs times n sequential pairs on resources prefix+from… and appends
// each pair's time to samples.
func timePairs(ctx context.Context, pair pairFunc, prefix string, from, n int, samples []time.Duration) ([]time.Duration, error) {
	for i := from; i < from+n; i++ {
		t0 := time.Now()
		if err := pair(ctx, prefix+strconv.Itoa(i)); err != nil {
			return samples, err
		}
		samples = append(samples, time.Since(t0))
	}
	return samples, nil
}

// lockThroughput returns the pairs per second and the pairs done.
func lockThroughput(ctx context.Context, pair pairFunc, conc int, dur time.Duration) (float64, int, error) {
	var mu sync.Mutex
	total := 0
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for w := range conc {
		g.Go(func() error {
			n := 0
			for ; time.Since(start) < dur; n++ {
				if err := pair(gctx, fmt.Sprintf("study/%d-%d", w, n)); err != nil {
					return err
				}
			}
			mu.Lock()
			total += n
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	return stats.Rate(int64(total), time.Since(start)), total, nil
}

// cpuOf returns the CPU time (user+system) used so far by each process.
func cpuOf(pids ...int) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		u, err := stack.ReadUsage(pid)
		if err != nil {
			return nil, err
		}
		out[i] = u.CPU
	}
	return out, nil
}

// redisCPU is the CPU time (user+system) Redis has used so far, from its
// INFO: Redis may run anywhere, not as a process of this machine.
func redisCPU(ctx context.Context, rdb *redis.Client) (time.Duration, error) {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, fmt.Errorf("redis info cpu: %w", err)
	}
	var total float64
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("redis info cpu: %s: %w", k, err)
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second)), nil
}

// latency is s as a results.Latency.
func latency(s stats.Summary) *results.Latency {
	return &results.Latency{P50: round3(stats.Millis(s.P50)), P99: round3(stats.Millis(s.P99)), Count: s.Count}
}

// profileBoth starts CPU profiles of the lockd at base (over d) and of this
// process when path is not empty; stop waits for both and writes them.
func profileBoth(ctx context.Context, base, path string, d time.Duration) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path + ".client")
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cpuProfile(ctx, base, "", path, d) }()
	return func() error {
		pprof.StopCPUProfile()
		return errors.Join(f.Close(), <-done)
	}, nil
}
