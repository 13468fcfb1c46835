package suite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
	"github.com/scsync/scsync/bench/internal/stats"
	"github.com/scsync/scsync/shared/wire"
)

// Replication measures clinic → cloud throughput.
var Replication = Bench{
	Name: "replication",
	Doc:  "N ≈1 KB records created on sc-local until all are visible in the cloud, vs a bare publish-with-confirms → consume → PostgreSQL batch insert",
	Flags: func(fs *flag.FlagSet) RunFunc {
		n := fs.Int("records", 5000, "records to create")
		size := fs.Int("size", 1024, "approximate JSON size of a record's content, bytes")
		conc := fs.Int("concurrency", 8, "concurrent clients creating records on sc-local (and publishers in the baseline)")
		timeout := fs.Duration("timeout", 5*time.Minute, "give up when the cloud has not seen every record by then")
		prof := fs.String("cpuprofile", "", "write CPU profiles of sc-local (to this file), of sc-cloud (the file + .cloud) and of this benchmark's own clients (the file + .bench) over the first -cpuprofile-for of the creates (SCSYNC_PPROF=1; go tool pprof), and the servers' logs beside")
		profFor := fs.Duration("cpuprofile-for", 10*time.Second, "how long -cpuprofile profiles (whole seconds)")
		return func(ctx context.Context, c Config) ([]results.Result, error) {
			return runReplication(ctx, c, *n, *size, *conc, *timeout, *prof, *profFor)
		}
	},
}

func runReplication(ctx context.Context, c Config, n, size, conc int, timeout time.Duration, prof string, profFor time.Duration) ([]results.Result, error) {
	base, err := bareThroughput(ctx, c, n, size, conc)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	c.Log.Info("baseline done", "records_per_s", int(base))

	var cl stack.Cleanup
	defer cl.Close()
	var extra []string
	if prof != "" {
		extra = append(extra, "SCSYNC_PPROF=1")
	}
	a, err := stack.NewAppliance(ctx, &cl, c.Env, c.Bin, "repl", extra...)
	if err != nil {
		return nil, err
	}
	if prof != "" {
		defer func() { _ = os.WriteFile(prof+".cloud.log", []byte(a.CloudProc.Output()), 0o644) }()
	}
	clinic, err := a.Enroll(ctx, "Bench Throughput Dental")
	if err != nil {
		return nil, err
	}
	if err := a.StartLocal(ctx, clinic, extra...); err != nil {
		return nil, err
	}
	if prof != "" {
		defer func() { _ = os.WriteFile(prof+".local.log", []byte(clinic.Proc.Output()), 0o644) }()
	}
	// The bodies are encoded before the clock starts, as the baseline's
	// are: the clients then only send them.
	bodies := make([][]byte, n)
	for i := range n {
		if bodies[i], err = json.Marshal(map[string]any{"data": barePatient(i+1, size)}); err != nil {
			return nil, err
		}
	}
	l0, err := stack.ReadUsage(clinic.Proc.Pid())
	if err != nil {
		return nil, err
	}
	gc0, gcErr := groupCommits(ctx, clinic.Base)
	c0, err := stack.ReadUsage(a.CloudProc.Pid())
	if err != nil {
		return nil, err
	}
	// The rest of the chain: PostgreSQL (the cloud's database's backends;
	// the whole server, shared with other users) and the RabbitMQ broker
	// (shared): which process limits the run end to end.
	self0 := selfCPU()
	pgW, pgAllW, mqW := stack.WatchCPU(stack.PostgresBackends(pgDatabase(a.PGURL))), stack.WatchCPU(stack.PostgresServer), stack.WatchCPU(stack.RabbitBroker)
	start := time.Now()
	profDone := make(chan error, 2)
	if prof != "" {
		go func() { profDone <- cpuProfile(ctx, clinic.Base, stack.LocalAPIToken, prof, profFor) }()
		go func() { profDone <- cpuProfile(ctx, a.Cloud, a.AdminToken, prof+".cloud", profFor) }()
		stopSelf, err := selfProfile(prof+".bench", profFor)
		if err != nil {
			return nil, err
		}
		defer stopSelf()
	} else {
		profDone <- nil
		profDone <- nil
	}
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range conc {
		g.Go(func() error {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return nil
				}
				body := bytes.NewReader(bodies[i-1])
				if err := stack.CallRaw(gctx, http.MethodPost, clinic.Base+"/v1/patients", "", "application/json", body, nil, http.StatusCreated); err != nil {
					return err
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	created := time.Since(start)
	c.Log.Info("records created on sc-local", "records", n, "seconds", created.Seconds())
	if err := waitCloudHead(ctx, a.Cloud, clinic, int64(n), timeout); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	l1, err := stack.ReadUsage(clinic.Proc.Pid())
	if err != nil {
		return nil, err
	}
	c1, err := stack.ReadUsage(a.CloudProc.Pid())
	if err != nil {
		return nil, err
	}
	gc1, err := groupCommits(ctx, clinic.Base)
	gcErr = errors.Join(gcErr, err)
	pg, pgAll, mq := pgW.Stop(), pgAllW.Stop(), mqW.Stop()
	self := selfCPU() - self0
	for range 2 {
		if err := <-profDone; err != nil {
			c.Log.Warn("no CPU profile", "err", err)
		}
	}
	ours := stats.Rate(int64(n), elapsed)
	r := results.New("replication", "replication_throughput", "records/s", results.HigherBetter, round1(ours), round1(base))
	r.Params = map[string]any{"records": n, "record_bytes": size, "concurrency": conc}
	r.Extra = map[string]float64{
		"ours_seconds":             round3(elapsed.Seconds()),
		"ours_create_api_rate":     round1(stats.Rate(int64(n), created)),
		"baseline_seconds":         round3(float64(n) / base),
		"ours_cloud_lag_after_api": round3((elapsed - created).Seconds()),
		"sc_local_cpu_seconds":     round3((l1.CPU - l0.CPU).Seconds()),
		"sc_cloud_cpu_seconds":     round3((c1.CPU - c0.CPU).Seconds()),
		"sc_local_peak_rss_mib":    mib(l1.PeakRSS),
		// Shared with whatever else runs on the machine: upper bounds.
		"postgres_db_cpu_seconds":     round3(pg.Seconds()),
		"postgres_server_cpu_seconds": round3(pgAll.Seconds()),
		"rabbitmq_cpu_seconds":        round3(mq.Seconds()),
		// The benchmark's own clients (and its /proc sampling).
		"bench_client_cpu_seconds": round3(self.Seconds()),
	}
	// sc-local's group commits during the run (its writes: the creates,
	// the relay's deletes, the acceptances' marks): the mean batch.
	if gcErr != nil {
		c.Log.Warn("no group commit counters", "err", gcErr)
	} else if commits := gc1[0] - gc0[0]; commits > 0 {
		r.Extra["sc_local_group_commits"] = commits
		r.Extra["sc_local_group_commit_mean_batch"] = round3((gc1[1] - gc0[1]) / commits)
	}
	r.Note = "ours: POST /v1/patients on sc-local (concurrency clients) until the cloud's change feed head reaches N; " +
		"baseline: the same JSON published with confirms (persistent, quorum queue), consumed with manual acks and batch-inserted into PostgreSQL"
	return []results.Result{r}, nil
}

// groupCommits reads sc-local's group commit counters from its /metrics:
// the commits and the writes they held.
func groupCommits(ctx context.Context, base string) ([2]float64, error) {
	var out [2]float64
	var errs [2]error
	for i, name := range []string{"scsync_local_group_commits_total", "scsync_local_group_commit_writes_total"} {
		out[i], errs[i] = stack.Gauge(ctx, base, name)
	}
	return out, errors.Join(errs[:]...)
}

// selfCPU is the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfProfile profiles this process (the benchmark's clients) for d, as
// cpuProfile does the servers; stop ends it early.
func selfProfile(path string, d time.Duration) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		})
	}
	time.AfterFunc(d, stop)
	return stop, nil
}

// pgDatabase is the database a postgres:// URL names.
func pgDatabase(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return strings.TrimPrefix(p.Path, "/")
}

// waitCloudHead waits until the clinic's cloud_seq head reaches n.
func waitCloudHead(ctx context.Context, cloud string, c *stack.Clinic, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var page wire.ChangesPage
	for {
		err := stack.Call(ctx, http.MethodGet, c.CloudPrefix(cloud)+"changes?limit=1", c.Token, nil, &page, http.StatusOK)
		if err != nil {
			return err
		}
		if page.Head >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cloud head %d after %s, want %d", page.Head, timeout, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// bareThroughput sends n records through the bare path and returns
// records/s from the first publish to the last insert's commit.
func bareThroughput(ctx context.Context, c Config, n, size, conc int) (float64, error) {
	var cl stack.Cleanup
	defer cl.Close()
	amqpURL, err := c.Env.Vhost(ctx, &cl, "bench_bare")
	if err != nil {
		return 0, err
	}
	pgURL, err := c.Env.PostgresDB(ctx, &cl, "bench_bare")
	if err != nil {
		return 0, err
	}
	db, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if err := bareTable(ctx, db); err != nil {
		return 0, err
	}
	bodies := make([][]byte, n)
	for i := range n {
		data, _ := json.Marshal(barePatient(i, size))
		bodies[i], _ = json.Marshal(bareRow{ID: int64(i + 1), Data: data})
	}
	cons, err := dialBare(amqpURL, "bare.up")
	if err != nil {
		return 0, err
	}
	defer cons.Close()
	var inserted atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	consErr := make(chan error, 1)
	go func() {
		consErr <- cons.consume(cctx, 1000, 500, 5*time.Millisecond, func(rows []bareRow) error {
			if err := bareInsert(cctx, db, rows); err != nil {
				return err
			}
			if inserted.Add(int64(len(rows))) >= int64(n) {
				once.Do(func() { close(all) })
			}
			return nil
		})
	}()
	start := time.Now()
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range conc {
		g.Go(func() error {
			b, err := dialBare(amqpURL, "bare.up")
			if err != nil {
				return err
			}
			defer b.Close()
			// A window of unconfirmed messages, as a relay keeps.
			const window = 256
			pending := make([]interface{ Wait() bool }, 0, window)
			waitAll := func() error {
				for _, p := range pending {
					if !p.Wait() {
						return fmt.Errorf("bare: publish nacked")
					}
				}
				pending = pending[:0]
				return nil
			}
			for {
				i := next.Add(1)
				if i > int64(n) {
					return waitAll()
				}
				dc, err := b.publish(gctx, bodies[i-1])
				if err != nil {
					return err
				}
				pending = append(pending, dc)
				if len(pending) == window {
					if err := waitAll(); err != nil {
						return err
					}
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	select {
	case <-all:
	case err := <-consErr:
		return 0, fmt.Errorf("bare consumer stopped: %w", err)
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("bare consumer inserted %d of %d", inserted.Load(), n)
	}
	return stats.Rate(int64(n), time.Since(start)), nil
}
