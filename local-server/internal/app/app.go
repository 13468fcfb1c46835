// Package app wires the clinic server together and runs it until its
// context ends: SQLite, the AMQP client, the syncer, and the HTTP API with
// health and metrics. It keeps serving the clinic when the cloud is away.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/local-server/internal/api"
	"github.com/scsync/scsync/local-server/internal/backup"
	"github.com/scsync/scsync/local-server/internal/cloudapi"
	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/local-server/internal/datadir"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/local-server/internal/syncer"
	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/local-server/internal/verify"
	lockclient "github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/openapi"
	"github.com/scsync/scsync/shared/telemetry"
	"github.com/scsync/scsync/shared/viewer"
	"github.com/scsync/scsync/shared/wire"
)

// Run starts the clinic server and blocks until ctx is done or a component
// fails. ready, when not nil, receives the bound HTTP address.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string)) error {
	return run(ctx, cfg, log, ready, nil)
}

// run is Run; onGuard, when not nil, is given the guard of every route
// before the server listens (a test walks its router).
func run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string), onGuard func(*auth.Guard)) error {
	reg := telemetry.NewRegistry()
	clinic := ids.ID(cfg.Clinic.ID)
	log = log.With("clinic", clinic)

	// The data directory holds patient data: the service account only
	// (0700; an older, wider directory is narrowed).
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// One server per data directory: a second would mint ids with the same
	// node id and write the same SQLite file.
	dirLock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return err
	}
	defer dirLock.Release() //nolint:errcheck // the process ends; the OS drops the lock anyway
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

	clientTLS, err := cfg.ClientTLS().Config()
	if err != nil {
		return fmt.Errorf("tls.ca_file: %w", err)
	}
	serverTLS, err := cfg.ServerTLS().Config()
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	// The clinic declares nothing: the cloud created its queues at
	// enrollment, and its broker identity may not (docs/protocol.md).
	// Each time the down consumer subscribes (at start, after a reconnect)
	// the syncer pulls: the cloud's down messages are transient, so a broker
	// restart loses those still queued (docs/protocol.md).
	var sy *syncer.Syncer
	broker, err := amqpx.New(amqpx.Config{URL: cfg.AMQP.URL, ConnectionName: "sc-local/" + clinic.String(), Prefetch: cfg.AMQP.Prefetch, TLS: clientTLS,
		OnSubscribe: func(queue string) {
			if queue == wire.DownQueue(clinic) {
				sy.PullSoon()
			}
		}},
		amqpx.Topology{}, log, reg)
	if err != nil {
		return err
	}
	cloud := cloudapi.New(cfg.Cloud.URL, cfg.Cloud.Token, clinic).WithTLS(clientTLS)
	tlsHTTP := func(timeout time.Duration) *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = clientTLS.Clone()
		return &http.Client{Transport: tr, Timeout: timeout}
	}
	sy = syncer.New(st, broker, cloud, cfg.Cloud.PullEvery, log, reg)
	brokerUser := amqpUser(cfg.AMQP.URL)
	sy.SetUserID(brokerUser)
	registerStatusMetrics(reg, st)

	var locker editing.Locker = editing.NoLocker{}
	var lockdPing func(context.Context) error
	if cfg.Lockd.URL != "" {
		lc := lockclient.New(cfg.Lockd.URL, cfg.Lockd.Token, &http.Client{Transport: lockclient.NewTransport(clientTLS), Timeout: lockclient.DefaultTimeout})
		locker = lc.Locker()
		lockdPing = func(ctx context.Context) error { return httpapi.PingURL(ctx, cfg.Lockd.URL+"/readyz") }
	}
	hub := events.NewHub(events.HubConfig{}, log)
	defer hub.Close()
	bus, err := events.NewBus(broker, events.BusConfig{Name: "local." + clinic.String(), Clinic: clinic, Provisioned: true, UserID: brokerUser}, hub.Publish, log)
	if err != nil {
		return err
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "events_lost_total",
		Help: "Times the cloud's live events arrived with some lost before them; this server's viewers were told to re-fetch."},
		func() float64 { return float64(bus.Gaps()) }))
	notes := &notifier{log: log, bus: bus, hub: hub, st: st}
	sy.OnApplied(notes.applied)
	sy.OnEvents(bus.Handle) // the cloud's events share the down queue
	edit, err := editing.New(ctx, st.DB(), locker, api.EditRecords{St: st}, notes.note, editing.Config{
		Side: string(wire.OriginLocal), LockTTL: cfg.Edit.LockTTL, IdleWarn: cfg.Edit.IdleWarn, IdleGrace: cfg.Edit.IdleGrace,
	}, log)
	if err != nil {
		return err
	}

	health := readiness(st.Ping, func(context.Context) error { return broker.Ready() }, cloud.Ping, lockdPing)
	registerReadinessMetrics(reg, health)

	mux := httpapi.NewMux()
	health.Register(mux)
	mux.Handle("GET /metrics", telemetry.Handler(reg))
	mux.Handle("GET "+openapi.Path, openapi.Handler(api.OpenAPI()))
	if telemetry.MountPprof(mux) {
		log.Warn("profiling endpoints are on (/debug/pprof/, SCSYNC_PPROF=1)")
	}
	window, err := config.ParseWindow(cfg.Files.BackfillWindow)
	if err != nil {
		return err
	}
	hold := fileHold{st: st, window: window, now: time.Now, backfillLeft: func() int64 { return sy.Backfill().Remaining }}
	fileAPI := transfer.NewClient(cfg.Cloud.URL, cfg.Cloud.Token, clinic, tlsHTTP(0))
	files := transfer.New(st.DB(), fileAPI,
		transfer.Options{OnChange: notes.transfer, BytesPerSecond: cfg.Files.BytesPerSecond, Concurrency: cfg.Files.Concurrency,
			Hold: hold.hold, TLS: clientTLS}, log)
	registerTransferMetrics(reg, files)
	keys, created, err := backup.LoadKeys(cfg.BackupIdentityFile(), cfg.Backup.Recipients)
	if err != nil {
		return err
	}
	if created {
		log.Warn("generated the backup recovery key: copy it off this machine, a restore needs it (docs/backup.md)",
			"path", cfg.BackupIdentityFile())
	}
	backups := backup.New(st, cloud, cfg.DataDir, cfg.Backup.Every, keys, log).WithTLS(clientTLS)
	imports, err := openImportDirs(cfg)
	if err != nil {
		return err
	}
	apiTok, err := cfg.APIToken(true)
	if err != nil {
		return err
	}
	sessions, err := auth.NewSessions(ctx, st.DB(), auth.SessionConfig{Idle: cfg.Auth.SessionIdle, Max: cfg.Auth.SessionMax})
	if err != nil {
		return err
	}
	auditLog, err := audit.Open(ctx, st.DB())
	if err != nil {
		return err
	}
	// An audited request's entry goes into the group commit of the moment
	// (one fsync for many), not a transaction of its own.
	auditLog = auditLog.WithWriter(st.Write)
	shipper, err := newAuditShipper(ctx, st.DB(), auditLog, cloud, api.Chain(clinic), log)
	if err != nil {
		return err
	}
	// A restored machine continues the chain the cloud holds (best effort
	// before serving; the shipper retries).
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	if err := shipper.catchUp(cctx); err != nil {
		log.Warn("audit catch-up from the cloud failed; the shipper retries", "err", err)
	}
	ccancel()
	verifier := verify.New(st, cloud, reg, notes.divergence, log).WithFiles(fileAPI, files, filepath.Join(cfg.DataDir, "files"))
	apiSrv := api.New(st, edit, sy.Wake, log).WithBackfillKick(sy.Notify).WithFiles(files, imports).WithBackfill(func() any { return sy.Backfill() }).
		WithBackup(backups).WithVerify(verifier).
		WithThumbnails(filepath.Join(cfg.DataDir, "files"), filepath.Join(cfg.DataDir, "thumbnails")).WithAuth(api.Auth{Sessions: sessions, Audit: auditLog, APIToken: apiTok, ClinicName: cfg.Clinic.Name})
	apiSrv.Register(mux)
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) { hub.ServeWS(w, r, clinic) })
	mux.Handle("GET /viewer/", viewer.Handler(viewer.Config{Side: events.SideLocal, APIPrefix: "/v1/", EventsPath: "/v1/events",
		Title: "scsync clinic " + clinic.String()}))
	// Every route passes the guard: a route without a rule in api.Policy
	// is refused.
	guard := auth.NewGuard(mux, api.Policy(), apiSrv.Authenticate, log)
	guard.OnAudit(apiSrv.Audit)
	if onGuard != nil {
		onGuard(guard)
	}
	telemetry.RegisterDependencies(reg, func(ctx context.Context) map[string]string { return health.Ready(ctx).Checks })
	srv := httpapi.NewServer(cfg.Listen, httpapi.Recover(log, telemetry.HTTPMetrics(reg)(guard)))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if serverTLS != nil {
		ln = tls.NewListener(ln, serverTLS)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return broker.Run(gctx) })
	g.Go(func() error { return sy.Run(gctx) })
	g.Go(func() error { return edit.Run(gctx) })
	g.Go(func() error { return bus.Run(gctx) })
	g.Go(func() error { return files.Run(gctx) })
	g.Go(func() error { return backups.Run(gctx) })
	g.Go(func() error { return runVerify(gctx, verifier, cfg.Verify.Every, cfg.Verify.Repair, sy.Notify, log) })
	g.Go(func() error { return shipper.Run(gctx) })
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
	log.Info("sc-local serving", "addr", ln.Addr().String(), "tls", serverTLS != nil, "data_dir", cfg.DataDir)
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
	// Group commit (docs/performance.md): writes per commit is the mean
	// batch; the fsyncs are about the commits.
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "group_commits_total",
			Help: "Transactions the clinic's writer committed for gathered writes (API writes, audit entries, the relay's and the down path's)."},
			func() float64 { c, _ := st.GroupCommits(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "local", Name: "group_commit_writes_total",
			Help: "Writes those commits held."},
			func() float64 { _, w := st.GroupCommits(); return float64(w) }),
	)
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

// amqpUser is the login in an AMQP URL (RabbitMQ's default guest when it has
// none): every publish names it as its user-id, which the broker checks.
func amqpUser(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.User.Username() == "" {
		return "guest"
	}
	return u.User.Username()
}

// readiness is sc-local's /readyz. An offline-first clinic server is ready
// when it can serve its clinic: its database answers. The links to the cloud
// (API, broker, lockd) are often down for hours in a clinic and the server
// keeps working (changes wait in the outbox, edits go "anyway"), so they are
// reported as degraded components, never as "not ready": a load balancer or
// service manager must not take a working clinic server out of service
// because the internet is away.
func readiness(db, broker, cloud, lockd httpapi.Check) *httpapi.Health {
	h := httpapi.NewHealth()
	h.Add("sqlite", db)
	h.AddOptional("rabbitmq", broker)
	h.AddOptional("cloud_api", cloud)
	if lockd != nil {
		h.AddOptional("lockd", lockd)
	}
	return h
}

// registerReadinessMetrics exports each /readyz component as
// scsync_local_component_up{component, required} (1 up, 0 down), checked at
// scrape time, so an alert can tell "the clinic is offline" (degraded) from
// "the clinic server cannot serve" (a required component down).
func registerReadinessMetrics(reg *prometheus.Registry, h *httpapi.Health) {
	reg.MustRegister(readinessCollector{h: h, up: prometheus.NewDesc("scsync_local_component_up",
		"Whether a component /readyz checks answers (1) or not (0); required=false components only degrade the server.",
		[]string{"component", "required"}, nil)})
}

type readinessCollector struct {
	h  *httpapi.Health
	up *prometheus.Desc
}

func (c readinessCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.up }

func (c readinessCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := c.h.Ready(ctx)
	for name, state := range r.Checks {
		v, required := 0.0, "true"
		if state == "ok" {
			v = 1
		}
		if c.h.Optional(name) {
			required = "false"
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, v, name, required)
	}
}
