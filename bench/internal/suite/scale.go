package suite

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
	"github.com/scsync/scsync/bench/internal/stats"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Scale measures a cloud serving many enrolled clinics (issue 14).
var Scale = Bench{
	Name: "scale",
	Doc: "N clinics enrolled through the cloud's admin enrollment API (each with the broker user, permissions and queues enrollment makes) on a private RabbitMQ, " +
		"two sc-cloud nodes, a sample of clinics running sc-local with a trickle of changes: broker RSS and idle CPU, each node's RSS, goroutines and idle CPU, " +
		"the time for the surviving node to take over every clinic after the other is killed, the sample's up latency; baseline: the same deployment with only the sample enrolled",
	Flags: func(fs *flag.FlagSet) RunFunc {
		var o scaleOpts
		fs.IntVar(&o.clinics, "clinics", envInt("SCSYNC_BENCH_CLINICS", 1000), "enrolled clinics N, the sample included (default from SCSYNC_BENCH_CLINICS, else 1000)")
		fs.IntVar(&o.sample, "sample", 5, "clinics of the sample: each runs a real sc-local with the identity its enrollment gave it")
		fs.IntVar(&o.enrollConc, "enroll-concurrency", 16, "concurrent enrollment calls")
		fs.DurationVar(&o.window, "window", 20*time.Second, "idle window over which CPU is measured (the sample's sc-locals idle)")
		fs.DurationVar(&o.trickle, "trickle", 30*time.Second, "how long the sample's trickle of changes runs")
		fs.Float64Var(&o.rate, "rate", 2, "changes per second on each sample clinic during the trickle")
		fs.DurationVar(&o.takeoverTimeout, "takeover-timeout", 3*time.Minute, "give up waiting for the surviving node to accept every clinic's change after this")
		fs.DurationVar(&o.settleMax, "settle-max", 5*time.Minute, "longest wait for the nodes to settle (goroutine counts steady) after enrollment")
		return func(ctx context.Context, c Config) ([]results.Result, error) {
			return runScale(ctx, c, o)
		}
	},
}

// The bars of issue 14, defined at 10,000 clinics.
const (
	barClinics        = 10000
	barBrokerCPU      = 10.0 // % of a core
	barBrokerRSSMiB   = 1024.0
	barTakeoverS      = 30.0
	barUpLatencyP99MS = 100.0
)

type scaleOpts struct {
	clinics, sample, enrollConc int
	window, trickle             time.Duration
	rate                        float64
	takeoverTimeout, settleMax  time.Duration
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

// scaleRun is one run's deployment: the private broker, two cloud nodes
// (node 0 is the one killed), the cloud's database, the takeover publisher.
type scaleRun struct {
	c       Config
	o       scaleOpts
	broker  *testenv.PrivateRabbit
	beam    int // the broker's Erlang VM
	cluster *stack.Cluster
	db      *pgxpool.Pool
	pub     *impersonator
}

// phaseFigures is what one phase (the sample alone, then N clinics)
// measured.
type phaseFigures struct {
	clinics   int
	settle    time.Duration
	settled   bool
	load1     string
	idle      usageFigures
	trickle   usageFigures
	lat       trickleFigures
	burst     burstFigures
	takeover  takeoverFigures
	restart   time.Duration
	enroll    time.Duration
	enrolled  int
	nodeNames []string
}

type usageFigures struct {
	window     time.Duration
	brokerRSS  int64
	brokerCPU  float64 // % of a core
	nodeRSS    []int64
	nodeCPU    []float64
	goroutines []int
}

func runScale(ctx context.Context, c Config, o scaleOpts) ([]results.Result, error) {
	if o.sample < 1 || o.clinics < o.sample {
		return nil, fmt.Errorf("scale: want 1 <= -sample (%d) <= -clinics (%d)", o.sample, o.clinics)
	}
	if o.rate <= 0 || o.enrollConc < 1 {
		return nil, errors.New("scale: -rate and -enroll-concurrency must be positive")
	}
	var cl stack.Cleanup
	defer cl.Close()
	t0 := time.Now()
	c.Log.Info("booting a private RabbitMQ (management plugin)")
	broker, err := stack.PrivateBroker(&cl)
	if err != nil {
		return nil, err
	}
	beam, err := stack.InGroup(broker.ProcessGroup(), "beam.smp")
	if err != nil {
		return nil, err
	}
	c.Log.Info("private broker up", "amqp", redact(broker.URL), "management", broker.MgmtURL, "seconds", time.Since(t0).Round(time.Second).Seconds())
	pub, err := newImpersonator(broker)
	if err != nil {
		return nil, err
	}
	cl.Add(pub.Close)
	// The nodes' AMQP URL asks for 60 s heartbeats (the URL's setting
	// overrides the client's 10 s), so that the node frozen for the
	// takeover keeps its connection while the takeover changes are being
	// published; the kill that follows closes its sockets at once, so the
	// heartbeat plays no part in the measured time. Clinics get the
	// broker's plain URL, as in production.
	nodeURL, clinicURL, err := nodeAMQP(broker.URL)
	if err != nil {
		return nil, err
	}
	cluster, err := stack.NewCluster(ctx, &cl, c.Env, c.Bin, "scale", 2, nodeURL, broker.MgmtURL, "guest", "guest",
		"SC_CLOUD_AMQP_CLINIC_URL="+clinicURL)
	if err != nil {
		return nil, err
	}
	db, err := pgxpool.New(ctx, cluster.PGURL)
	if err != nil {
		return nil, err
	}
	cl.Add(db.Close)
	s := &scaleRun{c: c, o: o, broker: broker, beam: beam, cluster: cluster, db: db, pub: pub}

	// Phase 1 (the baseline): only the sample is enrolled.
	sample, took, err := s.enroll(ctx, 0, o.sample, "Scale Sample")
	if err != nil {
		return nil, err
	}
	for _, cr := range sample {
		// Through node 1, which stays up when node 0 is killed.
		if err := cluster.StartLocal(ctx, cr, 1); err != nil {
			return nil, err
		}
	}
	base, err := s.phase(ctx, sample, sample)
	if err != nil {
		return nil, fmt.Errorf("baseline (%d clinics): %w", len(sample), err)
	}
	base.enroll, base.enrolled = took, len(sample)

	// Phase 2: N clinics.
	rest, took, err := s.enroll(ctx, 0, o.clinics-o.sample, "Scale Clinic")
	if err != nil {
		return nil, err
	}
	all := append(append([]*stack.Clinic{}, sample...), rest...)
	ours, err := s.phase(ctx, sample, all)
	if err != nil {
		return nil, fmt.Errorf("%d clinics: %w", len(all), err)
	}
	ours.enroll, ours.enrolled = took, len(rest)
	c.Log.Info("scale benchmark done", "clinics", o.clinics, "seconds", time.Since(t0).Round(time.Second).Seconds())
	return scaleResults(o, base, ours), nil
}

// enroll creates n clinics through node i's admin enrollment API, with
// enrollConc calls in flight, and returns them in order and how long it took.
func (s *scaleRun) enroll(ctx context.Context, node, n int, prefix string) ([]*stack.Clinic, time.Duration, error) {
	out := make([]*stack.Clinic, n)
	var next, done atomic.Int64
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for range min(s.o.enrollConc, n) {
		g.Go(func() error {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return nil
				}
				cr, err := s.cluster.Enroll(gctx, node, fmt.Sprintf("%s %05d", prefix, i+1))
				if err != nil {
					return err
				}
				out[i] = cr
				if d := done.Add(1); n >= 100 && d%int64(n/10) == 0 {
					s.c.Log.Info("enrolling", "done", d, "of", n, "per_s", round1(stats.Rate(d, time.Since(start))))
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	took := time.Since(start)
	s.c.Log.Info("enrolled", "clinics", n, "seconds", round1(took.Seconds()), "per_s", round1(stats.Rate(int64(n), took)))
	return out, took, nil
}

// phase measures the deployment with the clinics of all enrolled: it lets
// the nodes settle, watches them idle, runs the sample's trickle, kills
// node 0 for the takeover and starts it again.
func (s *scaleRun) phase(ctx context.Context, sample, all []*stack.Clinic) (phaseFigures, error) {
	f := phaseFigures{clinics: len(all)}
	for _, nd := range s.cluster.Nodes {
		f.nodeNames = append(f.nodeNames, nd.Name)
	}
	var err error
	f.settle, f.settled = s.settle(ctx, sample[0])
	f.load1 = loadAvg()
	s.c.Log.Info("idle window", "clinics", len(all), "seconds", s.o.window.Seconds(), "load1", f.load1)
	if f.idle, err = s.watch(ctx, s.o.window, nil); err != nil {
		return f, err
	}
	s.c.Log.Info("idle", "clinics", len(all), "broker_rss_mib", mib(f.idle.brokerRSS), "broker_cpu_pct", round3(f.idle.brokerCPU),
		"node_rss_mib", []float64{mib(f.idle.nodeRSS[0]), mib(f.idle.nodeRSS[1])}, "node_cpu_pct", f.idle.nodeCPU, "goroutines", f.idle.goroutines)
	if f.lat, f.trickle, err = s.runTrickle(ctx, sample); err != nil {
		return f, err
	}
	s.c.Log.Info("trickle", "clinics", len(all), "up_p50_ms", stats.Millis(f.lat.sum.P50), "up_p99_ms", stats.Millis(f.lat.sum.P99),
		"samples", f.lat.sum.Count, "missing", f.lat.missing)
	if f.burst, err = s.burst(ctx, all); err != nil {
		return f, err
	}
	s.c.Log.Info("burst", "clinics", len(all), "publish_s", round3(f.burst.publish.Seconds()), "all_accepted_s", round3(f.burst.total.Seconds()))
	if f.takeover, err = s.takeover(ctx, all); err != nil {
		return f, err
	}
	s.c.Log.Info("takeover", "clinics", len(all), "seconds", round3(f.takeover.total.Seconds()), "complete", f.takeover.complete,
		"accepted", f.takeover.done, "publish_s", round3(f.takeover.publish.Seconds()))
	if f.restart, err = s.cluster.Start(ctx, 0); err != nil {
		return f, fmt.Errorf("restart %s: %w", s.cluster.Nodes[0].Name, err)
	}
	s.c.Log.Info("node restarted", "node", s.cluster.Nodes[0].Name, "ready_s", round3(f.restart.Seconds()))
	return f, nil
}

// settle waits until the deployment has absorbed the enrollments: both
// nodes' goroutine counts steady (every consumer started) over 4 samples
// 2 s apart, no clinic's broker topology left to set up on either node
// (scsync_cloud_clinics_topology_pending), and a probe change saved on the first sample clinic's sc-local
// accepted by the cloud within settleProbe, three times in a row (after
// enrolling many clinics the broker stays slow for a while); at least 10 s
// after the last enrollment, at most settleMax.
func (s *scaleRun) settle(ctx context.Context, probe *stack.Clinic) (time.Duration, bool) {
	start := time.Now()
	var hist [][]int
	var probes []time.Duration
	prev, _ := stack.ReadUsage(s.beam)
	prevIO, _ := readIO(s.beam)
	prevAt := time.Now()
	for k := 0; ; k++ {
		var g []int
		pending := 0.0
		for _, nd := range s.cluster.Nodes {
			n, err := stack.Goroutines(ctx, nd.Base)
			if err != nil {
				n = -1
			}
			g = append(g, n)
			// Clinics whose broker topology a node still has to set up:
			// that work loads the broker and the node, so it is not rest.
			if p, err := stack.Gauge(ctx, nd.Base, "scsync_cloud_clinics_topology_pending"); err == nil {
				pending += p
			}
		}
		hist = append(hist, g)
		p, err := s.probe(ctx, probe, 2*time.Second)
		if err != nil {
			s.c.Log.Warn("settle probe failed", "err", err)
			p = time.Hour
		}
		probes = append(probes, p)
		var cpu, wr float64
		if u, err := stack.ReadUsage(s.beam); err == nil {
			cpu = float64(u.CPU-prev.CPU) / float64(time.Since(prevAt)) * 100
			io, _ := readIO(s.beam)
			wr = float64(io-prevIO) / (1 << 20) / time.Since(prevAt).Seconds()
			prev, prevIO, prevAt = u, io, time.Now()
		}
		s.c.Log.Debug("settling", "goroutines", g, "probe_ms", stats.Millis(p), "broker_cpu_pct", round1(cpu), "broker_write_mib_per_s", round1(wr),
			"topology_pending", pending)
		n := len(probes)
		if time.Since(start) >= 10*time.Second && len(hist) >= 4 && steady(hist[len(hist)-4:]) && pending == 0 &&
			n >= 3 && max(probes[n-1], probes[n-2], probes[n-3]) < settleProbe {
			s.c.Log.Info("deployment settled", "goroutines", g, "probe_ms", stats.Millis(p), "seconds", round1(time.Since(start).Seconds()))
			return time.Since(start), true
		}
		if time.Since(start) > s.o.settleMax {
			s.c.Log.Warn("deployment did not settle; measuring anyway", "goroutines", g, "probe_ms", stats.Millis(p),
				"seconds", round1(time.Since(start).Seconds()))
			return time.Since(start), false
		}
		select {
		case <-ctx.Done():
			return time.Since(start), false
		case <-time.After(2 * time.Second):
		}
	}
}

// settleProbe is the up latency under which a probe counts as settled.
const settleProbe = 250 * time.Millisecond

// probe saves a patient on cr's sc-local and returns the time until the
// cloud accepted it (its accepted_at), or timeout.
func (s *scaleRun) probe(ctx context.Context, cr *stack.Clinic, timeout time.Duration) (time.Duration, error) {
	var rec struct {
		ID string `json:"id"`
	}
	t0 := time.Now()
	if err := stack.Call(ctx, http.MethodPost, cr.Base+"/v1/patients", "", map[string]any{"data": barePatient(int(t0.UnixNano()%1_000_000), 256)},
		&rec, http.StatusCreated); err != nil {
		return 0, err
	}
	id, err := ids.Parse(rec.ID)
	if err != nil {
		return 0, err
	}
	for {
		var at time.Time
		err := s.db.QueryRow(ctx, `SELECT accepted_at FROM changes WHERE record_id = $1`, int64(id)).Scan(&at)
		if err == nil {
			return at.Sub(t0), nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return 0, err
		}
		if time.Since(t0) > timeout {
			return timeout, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readIO is the bytes process pid wrote to storage (/proc/<pid>/io).
func readIO(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no write_bytes")
}

// steady: every node's count moved by at most 2% (or 10: HTTP connections
// of the sample's pulls come and go) over the samples, and was read.
func steady(hist [][]int) bool {
	for node := range hist[0] {
		lo, hi := hist[0][node], hist[0][node]
		for _, h := range hist {
			lo, hi = min(lo, h[node]), max(hi, h[node])
		}
		if lo < 0 || hi-lo > max(10, hi/50) {
			return false
		}
	}
	return true
}

// watch measures the broker's and the nodes' RSS (at the end) and CPU
// (utime+stime over the window) while during runs (nil: nothing, idle).
func (s *scaleRun) watch(ctx context.Context, window time.Duration, during func(context.Context) error) (usageFigures, error) {
	f := usageFigures{}
	pids := []int{s.beam}
	for _, nd := range s.cluster.Nodes {
		pids = append(pids, nd.Proc.Pid())
	}
	u0, err := readAll(pids)
	if err != nil {
		return f, err
	}
	start := time.Now()
	if during != nil {
		if err := during(ctx); err != nil {
			return f, err
		}
	} else {
		select {
		case <-ctx.Done():
			return f, ctx.Err()
		case <-time.After(window):
		}
	}
	u1, err := readAll(pids)
	if err != nil {
		return f, err
	}
	f.window = time.Since(start)
	pct := func(i int) float64 { return round3(float64(u1[i].CPU-u0[i].CPU) / float64(f.window) * 100) }
	f.brokerRSS, f.brokerCPU = u1[0].RSS, pct(0)
	for i, nd := range s.cluster.Nodes {
		f.nodeRSS = append(f.nodeRSS, u1[i+1].RSS)
		f.nodeCPU = append(f.nodeCPU, pct(i+1))
		g, err := stack.Goroutines(ctx, nd.Base)
		if err != nil {
			return f, err
		}
		f.goroutines = append(f.goroutines, g)
	}
	return f, nil
}

func readAll(pids []int) ([]stack.Usage, error) {
	out := make([]stack.Usage, len(pids))
	for i, pid := range pids {
		u, err := stack.ReadUsage(pid)
		if err != nil {
			return nil, err
		}
		out[i] = u
	}
	return out, nil
}

type trickleFigures struct {
	sum      stats.Summary // POST on sc-local → the cloud's "changed" event
	accepted stats.Summary // POST on sc-local → the cloud's accepted_at
	missing  int
	rate     float64 // achieved, changes/s over the sample
}

// runTrickle POSTs patients on every sample clinic's sc-local at rate for
// the trickle's duration and measures, for each, the time until a cloud
// viewer gets its "changed" event (viewers of each clinic on both nodes;
// the first arrival counts: the event is sent right after the commit that
// accepted the change, by the node that accepted it, to every node).
func (s *scaleRun) runTrickle(ctx context.Context, sample []*stack.Clinic) (trickleFigures, usageFigures, error) {
	var f trickleFigures
	seen := newArrivals("changed")
	var viewers []*wsViewer
	defer func() { closeViewers(viewers) }()
	for _, cr := range sample {
		for _, nd := range s.cluster.Nodes {
			v, err := dialViewer(ctx, cr.CloudPrefix(nd.Base)+"events?access_token="+s.cluster.AdminToken, seen.note)
			if err != nil {
				return f, usageFigures{}, err
			}
			viewers = append(viewers, v)
		}
	}
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var n atomic.Int64
	period := time.Duration(float64(time.Second) / s.o.rate)
	run := func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		for i, cr := range sample {
			g.Go(func() error {
				// Spread the clinics over the period.
				select {
				case <-gctx.Done():
					return gctx.Err()
				case <-time.After(period * time.Duration(i) / time.Duration(len(sample))):
				}
				tick := time.NewTicker(period)
				defer tick.Stop()
				start := time.Now()
				for k := 1; time.Since(start) < s.o.trickle; k++ {
					var rec struct {
						ID string `json:"id"`
					}
					t0 := time.Now()
					if err := stack.Call(gctx, http.MethodPost, cr.Base+"/v1/patients", "", map[string]any{"data": barePatient(i*1_000_000+k, 1024)},
						&rec, http.StatusCreated); err != nil {
						return err
					}
					n.Add(1)
					mu.Lock()
					sent[rec.ID] = t0
					mu.Unlock()
					select {
					case <-gctx.Done():
						return gctx.Err()
					case <-tick.C:
					}
				}
				return nil
			})
		}
		return g.Wait()
	}
	t0 := time.Now()
	u, err := s.watch(ctx, s.o.trickle, run)
	if err != nil {
		return f, u, err
	}
	f.rate = stats.Rate(n.Load(), time.Since(t0))
	deadline := time.Now().Add(30 * time.Second)
	for {
		missing := 0
		for id := range sent {
			if _, ok := seen.get(id); !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			f.missing = missing
			break
		}
		select {
		case <-ctx.Done():
			return f, u, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	var samples []time.Duration
	for id, at := range sent {
		if t, ok := seen.get(id); ok {
			samples = append(samples, t.Sub(at))
		}
	}
	f.sum = stats.Summarize(samples)
	f.accepted, err = acceptedTimes(ctx, s.cluster.PGURL, sent)
	return f, u, err
}

// waitAccepted polls the cloud's database until every change of
// changeIDs is accepted or deadline passes, and returns how many are.
func (s *scaleRun) waitAccepted(ctx context.Context, changeIDs []int64, deadline time.Time) (int, error) {
	for {
		var n int
		if err := s.db.QueryRow(ctx, `SELECT count(*) FROM changes WHERE change_id = ANY($1)`, changeIDs).Scan(&n); err != nil {
			return n, err
		}
		if n == len(changeIDs) || time.Now().After(deadline) {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type burstFigures struct {
	publish  time.Duration // until every change was confirmed by the broker
	total    time.Duration // until every change was accepted by the cloud
	done     int
	complete bool
}

// burst publishes one change for every clinic at once, both nodes up, and
// waits until the cloud has accepted them all (or takeoverTimeout).
func (s *scaleRun) burst(ctx context.Context, clinics []*stack.Clinic) (burstFigures, error) {
	var f burstFigures
	t0 := time.Now()
	changeIDs, err := s.pub.publishAll(ctx, clinics)
	if err != nil {
		return f, err
	}
	f.publish = time.Since(t0)
	if f.done, err = s.waitAccepted(ctx, changeIDs, t0.Add(s.o.takeoverTimeout)); err != nil {
		return f, err
	}
	f.total, f.complete = time.Since(t0), f.done == len(changeIDs)
	if !f.complete {
		f.total = s.o.takeoverTimeout
		s.c.Log.Warn("burst incomplete", "accepted", f.done, "of", len(changeIDs), "after", s.o.takeoverTimeout)
	}
	return f, nil
}

type takeoverFigures struct {
	clinics  int
	total    time.Duration // kill → the last clinic's change accepted
	p50      time.Duration // kill → the median clinic's change accepted
	publish  time.Duration // publishing one change per clinic while node 0 was frozen
	done     int           // changes accepted before the timeout
	before   int           // of them, accepted before the kill (node 1 was already their active consumer)
	complete bool
}

// takeover freezes node 0 (SIGSTOP: its connections stay open, so the
// broker keeps treating it as the consumer it was), publishes one change
// for every clinic as that clinic (its broker user as user-id, its routing
// key, to the up exchange), kills node 0 (SIGKILL: the kernel closes its
// sockets, as on a crash) and waits until node 1 has accepted every one of
// those changes into PostgreSQL.
func (s *scaleRun) takeover(ctx context.Context, clinics []*stack.Clinic) (takeoverFigures, error) {
	f := takeoverFigures{clinics: len(clinics)}
	victim := s.cluster.Nodes[0].Proc
	if err := victim.Freeze(); err != nil {
		return f, err
	}
	killed := false
	defer func() {
		if !killed {
			victim.Kill()
		}
	}()
	p0 := time.Now()
	changeIDs, err := s.pub.publishAll(ctx, clinics)
	if err != nil {
		return f, err
	}
	f.publish = time.Since(p0)
	if f.publish > 50*time.Second {
		// The frozen node misses its AMQP heartbeats (60 s here); after two
		// the broker closes its connection and node 1 takes over before the
		// kill.
		s.c.Log.Warn("publishing the takeover changes took longer than a heartbeat; part of the takeover happened before the kill", "seconds", f.publish.Seconds())
	}
	kill := time.Now()
	victim.Kill()
	killed = true
	if f.done, err = s.waitAccepted(ctx, changeIDs, kill.Add(s.o.takeoverTimeout)); err != nil {
		return f, err
	}
	f.complete = f.done == len(changeIDs)
	if !f.complete {
		s.c.Log.Warn("takeover incomplete", "accepted", f.done, "of", len(changeIDs), "after", s.o.takeoverTimeout)
	}
	rows, err := s.db.Query(ctx, `SELECT accepted_at FROM changes WHERE change_id = ANY($1)`, changeIDs)
	if err != nil {
		return f, err
	}
	defer rows.Close()
	var ds []time.Duration
	for rows.Next() {
		var at time.Time
		if err := rows.Scan(&at); err != nil {
			return f, err
		}
		d := at.Sub(kill)
		if d < 0 {
			f.before++
			d = 0
		}
		ds = append(ds, d)
	}
	if err := rows.Err(); err != nil {
		return f, err
	}
	sum := stats.Summarize(ds)
	f.total, f.p50 = sum.Max, sum.P50
	if !f.complete {
		f.total = s.o.takeoverTimeout
	}
	return f, nil
}

// impersonator publishes a clinic's change exactly as its sc-local would
// (the same body, properties, exchange and routing key, and the clinic's
// broker user as user-id), for every clinic over one connection: a
// benchmark-only user of the private broker with RabbitMQ's impersonator
// tag, the one tag that lets a login publish with another user's user-id,
// and the right to write to the up exchange only. Opening one connection
// per clinic with the clinic's own secret would load the broker with
// thousands of logins in the very seconds the takeover is measured.
type impersonator struct {
	conn *amqp.Connection
	chs  []*pubChannel
}

type pubChannel struct {
	ch      *amqp.Channel
	returns chan amqp.Return
}

// impersonatorChannels publish in parallel: the broker handles each
// channel's publishes in one process.
const impersonatorChannels = 8

func newImpersonator(broker *testenv.PrivateRabbit) (*impersonator, error) {
	rh, err := rabbithole.NewClient(broker.MgmtURL, "guest", "guest")
	if err != nil {
		return nil, err
	}
	user, secret := "bench-impersonator", stack.Name("secret")
	if err := rhDo(rh.PutUser(user, rabbithole.UserSettings{Password: secret, Tags: rabbithole.UserTags{"impersonator"}})); err != nil {
		return nil, fmt.Errorf("create the benchmark's publisher: %w", err)
	}
	u, err := url.Parse(broker.URL)
	if err != nil {
		return nil, err
	}
	vhost := strings.TrimPrefix(u.Path, "/")
	if vhost == "" {
		vhost = "/"
	}
	perm := rabbithole.Permissions{Configure: "^$", Write: "^" + strings.ReplaceAll(wire.UpExchange, ".", `\.`) + "$", Read: "^$"}
	if err := rhDo(rh.UpdatePermissionsIn(vhost, user, perm)); err != nil {
		return nil, fmt.Errorf("permissions of the benchmark's publisher: %w", err)
	}
	u.User = url.UserPassword(user, secret)
	conn, err := amqp.Dial(u.String())
	if err != nil {
		return nil, err
	}
	p := &impersonator{conn: conn}
	for range impersonatorChannels {
		ch, err := conn.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		p.chs = append(p.chs, &pubChannel{ch: ch, returns: ch.NotifyReturn(make(chan amqp.Return, 1024))})
	}
	return p, nil
}

func rhDo(res *http.Response, err error) error {
	if res != nil && res.Body != nil {
		_ = res.Body.Close()
	}
	return err
}

func (p *impersonator) Close() { _ = p.conn.Close() }

// publishAll publishes one new patient for each clinic, spread over the
// channels, and waits for every confirm; it returns the changes' ids.
func (p *impersonator) publishAll(ctx context.Context, clinics []*stack.Clinic) ([]int64, error) {
	out := make([]int64, len(clinics))
	g, gctx := errgroup.WithContext(ctx)
	for w, pc := range p.chs {
		g.Go(func() error {
			var dcs []*amqp.DeferredConfirmation
			for i := w; i < len(clinics); i += len(p.chs) {
				change, err := pc.publish(gctx, clinics[i], i)
				if err != nil {
					return err
				}
				out[i] = change.id
				dcs = append(dcs, change.dc)
			}
			for _, dc := range dcs {
				ok, err := dc.WaitContext(gctx)
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("the broker refused a takeover change (nack)")
				}
			}
			select {
			case r := <-pc.returns:
				return fmt.Errorf("a takeover change was unroutable: key %s: %s", r.RoutingKey, r.ReplyText)
			default:
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

type published struct {
	id int64
	dc *amqp.DeferredConfirmation
}

// publish sends a new patient of clinic cr as its sc-local's relay would.
func (pc *pubChannel) publish(ctx context.Context, cr *stack.Clinic, n int) (published, error) {
	clinic, err := ids.Parse(cr.ID)
	if err != nil {
		return published{}, err
	}
	payload, err := json.Marshal(barePatient(9_000_000+n, 512))
	if err != nil {
		return published{}, err
	}
	change := ids.ID(rand.Int64N(1<<62) + 1)
	now := time.Now()
	body, enc, err := wire.Encode(wire.NewBatch(clinic, wire.Envelope{
		Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: clinic, Origin: wire.OriginLocal,
		ChangeID: change, Kind: wire.KindPatient, RecordID: ids.ID(rand.Int64N(1<<62) + 1),
		BaseVersion: version.V{}, NewVersion: version.First, At: now, Payload: payload,
	}))
	if err != nil {
		return published{}, err
	}
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, wire.UpExchange, wire.UpKey(clinic), true, false, amqp.Publishing{
		ContentType: wire.ContentType, ContentEncoding: enc, DeliveryMode: amqp.Persistent,
		MessageId: strconv.FormatInt(int64(change), 10), Timestamp: now, Type: string(wire.TypeChange),
		UserId: cr.AMQP.User, Body: body,
	})
	if err != nil {
		return published{}, fmt.Errorf("publish clinic %s's change: %w", cr.ID, err)
	}
	return published{id: int64(change), dc: dc}, nil
}

func scaleResults(o scaleOpts, base, ours phaseFigures) []results.Result {
	at := ""
	if o.clinics != barClinics {
		at = fmt.Sprintf("%d clinics", barClinics)
	}
	params := map[string]any{"clinics": o.clinics, "sample": o.sample, "window_s": o.window.Seconds(), "trickle_s": o.trickle.Seconds(),
		"rate_per_clinic_per_s": o.rate, "enroll_concurrency": o.enrollConc, "cloud_nodes": 2}
	both := func(r results.Result, note string) results.Result {
		r.Params = params
		r.Note = note + fmt.Sprintf("; baseline: the same deployment with only the %d sample clinics enrolled", o.sample)
		if r.Extra == nil {
			r.Extra = map[string]float64{}
		}
		r.Extra["ours_load1"], r.Extra["baseline_load1"] = parseLoad(ours.load1), parseLoad(base.load1)
		return r
	}
	var out []results.Result

	en := results.New("scale", "scale_enroll_rate", "clinics/s", results.HigherBetter, round1(stats.Rate(int64(ours.enrolled), ours.enroll)), 0)
	en.Params = params
	en.Extra = map[string]float64{"ours_seconds": round1(ours.enroll.Seconds()), "clinics": float64(ours.enrolled)}
	en.Note = fmt.Sprintf("POST /v1/admin/clinics on one node, %d in flight: the clinic's row and token, its broker user, permissions, topic permissions and queues through the management API", o.enrollConc)
	out = append(out, en)

	rss := both(results.New("scale", "scale_broker_rss", "MiB", results.LowerBetter, mib(ours.idle.brokerRSS), mib(base.idle.brokerRSS)),
		"VmRSS of the private broker's Erlang VM (beam.smp) at the end of the idle window")
	rss.WithBar(barBrokerRSSMiB, at)
	cpu := both(results.New("scale", "scale_broker_idle_cpu", "% of a core", results.LowerBetter, ours.idle.brokerCPU, base.idle.brokerCPU),
		"beam.smp utime+stime over the idle window / window, the sample's sc-locals connected and idle")
	cpu.Extra["ours_trickle_cpu_pct"], cpu.Extra["baseline_trickle_cpu_pct"] = ours.trickle.brokerCPU, base.trickle.brokerCPU
	cpu.WithBar(barBrokerCPU, at)
	out = append(out, rss, cpu)

	for i := range ours.idle.nodeRSS {
		role := "killed for the takeover, active consumer of the clinics enrolled through it"
		if i > 0 {
			role = "survivor; the sample's sc-locals use its API"
		}
		name := fmt.Sprintf("scale_node%d", i+1)
		r := both(results.New("scale", name+"_rss", "MiB", results.LowerBetter, mib(ours.idle.nodeRSS[i]), mib(base.idle.nodeRSS[i])),
			fmt.Sprintf("sc-cloud node %d (%s): VmRSS at the end of the idle window", i+1, role))
		g := both(results.New("scale", name+"_goroutines", "goroutines", results.LowerBetter, float64(ours.idle.goroutines[i]), float64(base.idle.goroutines[i])),
			fmt.Sprintf("sc-cloud node %d: go_goroutines from /metrics at the end of the idle window", i+1))
		c := both(results.New("scale", name+"_idle_cpu", "% of a core", results.LowerBetter, ours.idle.nodeCPU[i], base.idle.nodeCPU[i]),
			fmt.Sprintf("sc-cloud node %d: utime+stime over the idle window / window", i+1))
		c.Extra["ours_trickle_cpu_pct"], c.Extra["baseline_trickle_cpu_pct"] = ours.trickle.nodeCPU[i], base.trickle.nodeCPU[i]
		out = append(out, r, g, c)
	}

	tk := both(results.New("scale", "scale_takeover", "s", results.LowerBetter, round3(ours.takeover.total.Seconds()), round3(base.takeover.total.Seconds())),
		"node 1 frozen (SIGSTOP), one change published for every clinic as that clinic (its user-id and key, to the up exchange), node 1 killed (SIGKILL); "+
			"the time from the kill until node 2 has accepted the last of those changes into PostgreSQL (max accepted_at − kill); the timeout when not all were")
	tk.Extra["ours_p50_s"], tk.Extra["baseline_p50_s"] = round3(ours.takeover.p50.Seconds()), round3(base.takeover.p50.Seconds())
	tk.Extra["ours_accepted"], tk.Extra["ours_clinics"] = float64(ours.takeover.done), float64(ours.takeover.clinics)
	tk.Extra["ours_accepted_before_kill"] = float64(ours.takeover.before)
	tk.Extra["ours_publish_s"] = round3(ours.takeover.publish.Seconds())
	tk.Extra["ours_complete"] = boolFloat(ours.takeover.complete)
	tk.WithBar(barTakeoverS, at)
	out = append(out, tk)

	bu := both(results.New("scale", "scale_burst", "s", results.LowerBetter, round3(ours.burst.total.Seconds()), round3(base.burst.total.Seconds())),
		"both nodes up: one change published for every clinic at once (as that clinic), until the cloud has accepted them all; the timeout when not all were")
	bu.Extra["ours_publish_s"], bu.Extra["baseline_publish_s"] = round3(ours.burst.publish.Seconds()), round3(base.burst.publish.Seconds())
	bu.Extra["ours_complete"] = boolFloat(ours.burst.complete)
	out = append(out, bu)

	lat := both(results.New("scale", "scale_up_latency_p99", "ms", results.LowerBetter, round3(stats.Millis(ours.lat.sum.P99)), round3(stats.Millis(base.lat.sum.P99))),
		fmt.Sprintf("the sample's trickle (%g changes/s on each of %d clinics): from sending POST /v1/patients to sc-local until a cloud viewer (WebSocket, on either node) gets the record's \"changed\" event, sent right after the cloud's commit",
			o.rate, o.sample))
	lat.OursLatency, lat.BaselineLatency = latency(ours.lat.sum), latency(base.lat.sum)
	lat.Extra["ours_missing_events"], lat.Extra["ours_rate_per_s"] = float64(ours.lat.missing), round1(ours.lat.rate)
	lat.Extra["ours_accepted_p50_ms"], lat.Extra["ours_accepted_p99_ms"] = round3(stats.Millis(ours.lat.accepted.P50)), round3(stats.Millis(ours.lat.accepted.P99))
	lat.Extra["baseline_accepted_p50_ms"], lat.Extra["baseline_accepted_p99_ms"] = round3(stats.Millis(base.lat.accepted.P50)), round3(stats.Millis(base.lat.accepted.P99))
	lat.WithBar(barUpLatencyP99MS, at)
	out = append(out, lat)

	rs := both(results.New("scale", "scale_node_restart_ready", "s", results.LowerBetter, round3(ours.restart.Seconds()), round3(base.restart.Seconds())),
		"node 1 started again after the takeover: process start until /readyz answers 200")
	rs.Extra["ours_settle_s"], rs.Extra["baseline_settle_s"] = round1(ours.settle.Seconds()), round1(base.settle.Seconds())
	rs.Extra["ours_settled"] = boolFloat(ours.settled)
	out = append(out, rs)
	return out
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

func parseLoad(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

// nodeAMQP is the cloud nodes' AMQP URL (brokerURL with 60 s heartbeats)
// and the URL clinics dial (brokerURL without credentials).
func nodeAMQP(brokerURL string) (node, clinic string, err error) {
	u, err := url.Parse(brokerURL)
	if err != nil {
		return "", "", err
	}
	q := u.Query()
	q.Set("heartbeat", "60")
	u.RawQuery = q.Encode()
	node = u.String()
	u.RawQuery, u.User = "", nil
	return node, u.String(), nil
}

// redact drops the password of an AMQP URL for the log.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Redacted()
}
