// Package app wires the clinic server together and runs it until its
// context ends: SQLite, the AMQP client, the syncer, and the HTTP API with
// health and metrics. It keeps serving the clinic when the cloud is away.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/local-server/internal/api"
	"github.com/scsync/scsync/local-server/internal/backup"
	"github.com/scsync/scsync/local-server/internal/cloudapi"
	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/local-server/internal/syncer"
	"github.com/scsync/scsync/local-server/internal/transfer"
	lockclient "github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/telemetry"
	"github.com/scsync/scsync/shared/viewer"
	"github.com/scsync/scsync/shared/wire"
)

// Run starts the clinic server and blocks until ctx is done or a component
// fails. ready, when not nil, receives the bound HTTP address.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string)) error {
	reg := telemetry.NewRegistry()
	clinic := ids.ID(cfg.Clinic.ID)
	log = log.With("clinic", clinic)

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	gen, err := ids.NewGenerator(cfg.Clinic.Node, ids.GeneratorOptions{StateFile: cfg.IDStatePath()})
	if err != nil {
		return err
	}
	st, err := store.Open(cfg.DBPath(), clinic, gen)
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.Scope != nil {
		if err := st.SetScope(ctx, *cfg.Scope); err != nil {
			return fmt.Errorf("scope: %w", err)
		}
	}

	broker, err := amqpx.New(amqpx.Config{URL: cfg.AMQP.URL, ConnectionName: "sc-local/" + clinic.String(), Prefetch: cfg.AMQP.Prefetch},
		wire.BaseTopology(), log, reg)
	if err != nil {
		return err
	}
	cloud := cloudapi.New(cfg.Cloud.URL, cfg.Cloud.Token, clinic)
	sy := syncer.New(st, broker, cloud, cfg.Cloud.PullEvery, log, reg)
	registerStatusMetrics(reg, st)

	var locker editing.Locker = editing.NoLocker{}
	var lockdPing func(context.Context) error
	if cfg.Lockd.URL != "" {
		lc := lockclient.New(cfg.Lockd.URL, cfg.Lockd.Token, nil)
		locker = lc.Locker()
		lockdPing = func(ctx context.Context) error { return httpapi.PingURL(ctx, cfg.Lockd.URL+"/readyz") }
	}
	hub := events.NewHub(events.HubConfig{}, log)
	defer hub.Close()
	bus, err := events.NewBus(broker, events.BusConfig{Name: "local." + clinic.String(), Clinic: clinic}, hub.Publish, log)
	if err != nil {
		return err
	}
	notes := &notifier{log: log, bus: bus, hub: hub, st: st}
	sy.OnApplied(notes.applied)
	edit, err := editing.New(ctx, st.DB(), locker, api.EditRecords{St: st}, notes.note, editing.Config{
		Side: string(wire.OriginLocal), LockTTL: cfg.Edit.LockTTL, IdleWarn: cfg.Edit.IdleWarn, IdleGrace: cfg.Edit.IdleGrace,
	}, log)
	if err != nil {
		return err
	}

	health := httpapi.NewHealth()
	health.Add("sqlite", st.Ping)
	health.Add("rabbitmq", func(context.Context) error { return broker.Ready() })
	health.Add("cloud_api", cloud.Ping)
	if lockdPing != nil {
		health.AddOptional("lockd", lockdPing)
	}

	mux := http.NewServeMux()
	health.Register(mux)
	mux.Handle("GET /metrics", telemetry.Handler(reg))
	if telemetry.MountPprof(mux) {
		log.Warn("profiling endpoints are on (/debug/pprof/, SCSYNC_PPROF=1)")
	}
	if err := transfer.Migrate(st.DB()); err != nil {
		return err
	}
	files := transfer.New(st.DB(), transfer.NewClient(cfg.Cloud.URL, cfg.Cloud.Token, clinic, nil),
		transfer.Options{OnChange: notes.transfer, BytesPerSecond: cfg.Files.BytesPerSecond, Concurrency: cfg.Files.Concurrency}, log)
	registerTransferMetrics(reg, files)
	backups := backup.New(st, cloud, cfg.DataDir, cfg.Backup.Every, log)
	api.New(st, edit, sy.Notify, log).WithFiles(files).WithBackfill(func() any { return sy.Backfill() }).
		WithBackup(backups).Register(mux)
	// The clinic API serves the clinic's LAN without tokens; so do events.
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) { hub.ServeWS(w, r, clinic) })
	mux.Handle("GET /viewer/", viewer.Handler(viewer.Config{Side: events.SideLocal, APIPrefix: "/v1/", EventsPath: "/v1/events",
		Title: "scsync clinic " + clinic.String()}))
	srv := httpapi.NewServer(cfg.Listen, httpapi.Recover(log, mux))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return broker.Run(gctx) })
	g.Go(func() error { return sy.Run(gctx) })
	g.Go(func() error { return edit.Run(gctx) })
	g.Go(func() error { return bus.Run(gctx) })
	g.Go(func() error { return files.Run(gctx) })
	g.Go(func() error { return backups.Run(gctx) })
	g.Go(func() error {
		return fetchMissing(gctx, st, files, filepath.Join(cfg.DataDir, "files"), 10*time.Second, log)
	})
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		hub.Close() // WebSockets are hijacked: Shutdown does not close them
		return srv.Shutdown(sctx)
	})
	log.Info("sc-local serving", "addr", ln.Addr().String(), "data_dir", cfg.DataDir)
	if ready != nil {
		ready(ln.Addr().String())
	}
	err = g.Wait()
	log.Info("sc-local stopped")
	return err
}

// registerStatusMetrics exports the replication status as gauges, read from
// the database at scrape time.
func registerStatusMetrics(reg *prometheus.Registry, st *store.Store) {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("scsync_local_"+name, help, nil, nil)
	}
	c := statusCollector{st: st,
		pending:  desc("records_pending", "Records changed here and not yet accepted by the cloud."),
		synced:   desc("records_synced", "Records whose current version the cloud accepted."),
		conflict: desc("records_conflict", "Records flagged as conflicts."),
		outbox:   desc("outbox_messages", "Changes not yet confirmed by the broker."),
		oldest:   desc("oldest_pending_seconds", "Age of the oldest pending change."),
		cp:       desc("checkpoint_cloud_seq", "Last cloud_seq applied here."),
		excluded: desc("records_excluded", "Records outside the sync scope."),
		contact:  desc("last_contact_age_seconds", "Seconds since the cloud was last heard from (absent before the first contact)."),
	}
	reg.MustRegister(c)
}

type statusCollector struct {
	st                                                               *store.Store
	pending, synced, conflict, outbox, oldest, cp, excluded, contact *prometheus.Desc
}

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.synced, c.conflict, c.outbox, c.oldest, c.cp, c.excluded, c.contact} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.st.Status(context.Background())
	if err != nil {
		return
	}
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	g(c.pending, float64(s.Pending))
	g(c.synced, float64(s.Synced))
	g(c.conflict, float64(s.Conflict))
	g(c.outbox, float64(s.Outbox))
	g(c.oldest, s.OldestPendingAge)
	g(c.cp, float64(s.Checkpoint))
	g(c.excluded, float64(s.Excluded))
	if s.LastContact != nil {
		g(c.contact, time.Since(*s.LastContact).Seconds())
	}
}

// registerTransferMetrics exports what the file worker sent, read at scrape
// time (parts sent show that a resumed upload does not send a part twice).
func registerTransferMetrics(reg *prometheus.Registry, w *transfer.Worker) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "file_parts_sent_total",
			Help: "Multipart upload parts this process sent to S3 (S3 accepted them)."}, func() float64 { return float64(w.PartsSent()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "file_bytes_sent_total",
			Help: "File bytes this process sent to S3."}, func() float64 { return float64(w.BytesSent()) }),
	)
}
