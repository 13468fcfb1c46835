package suite

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver sc-local uses

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
	"github.com/scsync/scsync/bench/internal/stats"
)

// Idle measures an idle sc-local: start-up time, RSS and CPU.
var Idle = Bench{
	Name: "idle",
	Doc:  "sc-local's start-up time (fresh data dir → /readyz) and its RSS and CPU while idle, vs a bare Go server that opens SQLite, connects to RabbitMQ and serves /readyz",
	Flags: func(fs *flag.FlagSet) RunFunc {
		window := fs.Duration("window", 10*time.Second, "how long to watch the idle process")
		return func(ctx context.Context, c Config) ([]results.Result, error) {
			return runIdle(ctx, c, *window)
		}
	},
}

const childBareServer = "bare-server"

type idleFigures struct {
	startup time.Duration
	rss     int64
	peak    int64
	cpu     float64 // percent of one core
}

func runIdle(ctx context.Context, c Config, window time.Duration) ([]results.Result, error) {
	var cl stack.Cleanup
	defer cl.Close()
	a, err := stack.NewAppliance(ctx, &cl, c.Env, c.Bin, "idle")
	if err != nil {
		return nil, err
	}
	clinic, err := a.Enroll(ctx, "Bench Idle Dental")
	if err != nil {
		return nil, err
	}
	if err := a.StartLocal(ctx, clinic); err != nil {
		return nil, err
	}
	ours, err := idleWatch(ctx, clinic.Proc, clinic.Base, window)
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "scsync-bench-bare")
	if err != nil {
		return nil, err
	}
	cl.Add(func() { _ = os.RemoveAll(dir) })
	addr, err := stack.FreeAddr()
	if err != nil {
		return nil, err
	}
	p, err := startChild(&cl, childBareServer, "BARE_LISTEN="+addr, "BARE_DB="+filepath.Join(dir, "bare.db"), "BARE_AMQP_URL="+a.AMQPURL)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, "http://"+addr, 60*time.Second); err != nil {
		return nil, err
	}
	bare, err := idleWatch(ctx, p, "http://"+addr, window)
	if err != nil {
		return nil, err
	}
	params := map[string]any{"window_s": window.Seconds()}
	st := results.New("idle", "idle_startup", "ms", results.LowerBetter, round1(stats.Millis(ours.startup)), round1(stats.Millis(bare.startup)))
	st.Note = "process start with a fresh data directory (schema created) until /readyz answers 200, polled every 10 ms; the cloud is up"
	rss := results.New("idle", "idle_rss", "MiB", results.LowerBetter, mib(ours.rss), mib(bare.rss))
	rss.Extra = map[string]float64{"ours_peak_rss_mib": mib(ours.peak), "baseline_peak_rss_mib": mib(bare.peak)}
	rss.Note = "VmRSS at the end of the idle window; baseline: a bare Go server (this benchmark's binary) with SQLite open, an AMQP connection and /readyz"
	cpu := results.New("idle", "idle_cpu", "% of a core", results.LowerBetter, round3(ours.cpu), round3(bare.cpu))
	cpu.Note = "utime+stime over the idle window (10 ms clock ticks) / window; sc-local has a cloud pull every 2 s, heartbeats and relays"
	for _, r := range []*results.Result{&st, &rss, &cpu} {
		r.Params = params
	}
	return []results.Result{st, rss, cpu}, nil
}

// idleWatch measures p: its start-up (already done: from p.Started to
// ready), then its usage over window.
func idleWatch(ctx context.Context, p *stack.Proc, base string, window time.Duration) (idleFigures, error) {
	var f idleFigures
	if err := p.WaitReady(ctx, base, time.Minute); err != nil {
		return f, err
	}
	f.startup = p.Ready.Sub(p.Started)
	// Let start-up work (migrations, first pull) settle before watching.
	select {
	case <-ctx.Done():
		return f, ctx.Err()
	case <-time.After(2 * time.Second):
	}
	u0, err := stack.ReadUsage(p.Pid())
	if err != nil {
		return f, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return f, ctx.Err()
	case <-time.After(window):
	}
	u1, err := stack.ReadUsage(p.Pid())
	if err != nil {
		return f, err
	}
	f.rss, f.peak = u1.RSS, u1.PeakRSS
	f.cpu = float64(u1.CPU-u0.CPU) / float64(time.Since(t0)) * 100
	return f, nil
}

// bareServer is the idle baseline: SQLite open (with a table), one AMQP
// connection, an HTTP server answering /readyz.
func bareServer(ctx context.Context) error {
	db, err := sql.Open("sqlite", os.Getenv("BARE_DB"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, data TEXT)`); err != nil {
		return err
	}
	conn, err := amqp.Dial(os.Getenv("BARE_AMQP_URL"))
	if err != nil {
		return err
	}
	defer conn.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := db.PingContext(r.Context()); err != nil || conn.IsClosed() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		// JSON as sc-local's /readyz answers (stack.WaitReady reads its checks).
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintln(w, `{"status":"ok"}`)
	})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", os.Getenv("BARE_LISTEN"))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
