// Package app wires one sc-cloud node together and runs it until its context
// ends: PostgreSQL, RabbitMQ, Redis (node id lease), S3, the replication
// consumers and relay, and the HTTP API with health and metrics.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/cloud-server/internal/api"
	"github.com/scsync/scsync/cloud-server/internal/backups"
	"github.com/scsync/scsync/cloud-server/internal/blob"
	"github.com/scsync/scsync/cloud-server/internal/config"
	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/mfa"
	"github.com/scsync/scsync/cloud-server/internal/replicate"
	"github.com/scsync/scsync/cloud-server/internal/retention"
	"github.com/scsync/scsync/cloud-server/internal/store"
	lockclient "github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/editing"
	sevents "github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/openapi"
	"github.com/scsync/scsync/shared/redisx"
	"github.com/scsync/scsync/shared/telemetry"
	"github.com/scsync/scsync/shared/viewer"
	"github.com/scsync/scsync/shared/wire"
)

// Run starts the node and blocks until ctx is done or a component fails.
// ready, when not nil, receives the bound HTTP address once serving.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string)) error {
	return run(ctx, cfg, log, ready, nil)
}

// run is Run; onGuard, when not nil, is given the guard of every route
// before the server listens (a test walks its router).
func run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string), onGuard func(*auth.Guard)) error {
	reg := telemetry.NewRegistry()

	clientTLS, err := cfg.ClientTLS().Config()
	if err != nil {
		return fmt.Errorf("tls.ca_file: %w", err)
	}
	serverTLS, err := cfg.ServerTLS().Config()
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	rdb := redisx.NewClient(redisOptions(cfg, clientTLS), cfg.Redis.Sentinel)
	defer rdb.Close()
	lopts := ids.LeaseOptions{Prefix: cfg.Redis.Prefix, TTL: cfg.Redis.LeaseTTL}
	if cfg.Redis.Sentinel.Enabled() {
		// The lease must be on the replica before the node mints with it:
		// a failover to a replica that never saw it would hand the id to
		// the next node that starts.
		lopts.Replicas = 1
	}
	lease, err := ids.LeaseCloudNode(ctx, rdb, lopts, log)
	if err != nil {
		return fmt.Errorf("lease node id: %w", err)
	}
	defer func() {
		if err := lease.Release(context.WithoutCancel(ctx)); err != nil {
			log.Warn("node id release failed", "err", err)
		}
	}()
	gen, err := ids.NewGenerator(lease.Node(), ids.GeneratorOptions{})
	if err != nil {
		return err
	}
	log = log.With("node", lease.Node())

	st, err := store.Open(ctx, cfg.Postgres.URL, gen)
	if err != nil {
		return err
	}
	defer st.Close()

	blobCfg := blob.Config{Endpoint: cfg.S3.Endpoint, Region: cfg.S3.Region, Bucket: cfg.S3.Bucket,
		AccessKey: cfg.S3.AccessKey, SecretKey: cfg.S3.SecretKey, PathStyle: cfg.S3.PathStyle,
		ServerSideEncryption: cfg.Files.ServerSideEncryption, TLS: clientTLS}
	blobs := blob.New(blobCfg)
	if err := blobs.EnsureBucket(ctx); err != nil {
		// S3 is needed for files only; metadata replication runs without it.
		log.Warn("s3 bucket not ready", "err", err)
	}

	name := cfg.NodeName
	if name == "" {
		h, _ := os.Hostname()
		name = fmt.Sprintf("sc-cloud@%s/%d", h, lease.Node())
	}
	broker, err := amqpx.New(amqpx.Config{URL: cfg.AMQP.URL, ConnectionName: name, Prefetch: cfg.AMQP.Prefetch, TLS: clientTLS},
		wire.CloudTopology(cfg.AMQP.UpShards), log, reg)
	if err != nil {
		return err
	}
	rep := replicate.New(st, broker, log, reg)
	rep.SetShards(cfg.AMQP.UpShards)
	rep.SetAcceptBatch(cfg.AMQP.AcceptBatch)

	health := httpapi.NewHealth()
	health.Add("postgres", st.Ping)
	health.Add("rabbitmq", func(context.Context) error { return broker.Ready() })
	health.Add("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	health.Add("s3", blobs.Ping)

	mux := httpapi.NewMux()
	health.Register(mux)
	mux.Handle("GET /metrics", telemetry.Handler(reg))
	mux.Handle("GET "+openapi.Path, openapi.Handler(api.OpenAPI()))
	if telemetry.MountPprof(mux) {
		log.Warn("profiling endpoints are on (/debug/pprof/, SCSYNC_PPROF=1)")
	}
	var locker editing.Locker = editing.NoLocker{}
	if cfg.Lockd.URL != "" {
		tr := lockclient.NewTransport(clientTLS)
		locker = lockclient.New(cfg.Lockd.URL, cfg.Lockd.Token, &http.Client{Transport: tr, Timeout: lockclient.DefaultTimeout}).Locker()
		health.AddOptional("lockd", func(ctx context.Context) error { return httpapi.PingURL(ctx, cfg.Lockd.URL+"/readyz") })
	}
	hub := sevents.NewHub(sevents.HubConfig{}, log)
	defer hub.Close()
	bus, err := sevents.NewBus(broker, sevents.BusConfig{Name: fmt.Sprintf("cloud.%d", lease.Node())}, hub.Publish, log)
	if err != nil {
		return err
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "events_lost_total",
		Help: "Times live events from another server arrived with some lost before them; this node's viewers were told to re-fetch."},
		func() float64 { return float64(bus.Gaps()) }))
	notes := &notifier{log: log, bus: bus}
	rep.OnAccepted(notes.accepted)
	edit, err := editing.New(ctx, st.DB(), locker, api.EditRecords{St: st, IDs: gen}, notes.note, editing.Config{
		Side: string(wire.OriginCloud), LockTTL: cfg.Edit.LockTTL, IdleWarn: cfg.Edit.IdleWarn, IdleGrace: cfg.Edit.IdleGrace,
	}, log)
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
	totpKey, err := mfa.ParseKey(cfg.Auth.TOTPKey)
	if err != nil {
		return err
	}
	factors, err := mfa.Open(ctx, st.DB(), mfa.Config{Key: totpKey})
	if err != nil {
		return err
	}
	if !factors.Configured() {
		log.Warn("auth.totp_key is not set: people cannot enrol a second factor for cloud logins")
	}
	apiSrv := api.New(st, edit, gen, cfg.Auth.AdminToken, rep.Notify, log).WithAuth(sessions, auditLog).
		WithTOTP(factors, cfg.Auth.RequireTOTP)
	runIdentity, err := identity(cfg, st, broker, apiSrv, rep, hub, health, log)
	if err != nil {
		return err
	}
	apiSrv.Register(mux)
	rewinds := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "clinic_rewinds_total",
		Help: "Clinics found older than what they had acknowledged (restored from a backup or wiped); the cloud re-sent what they lost."})
	reg.MustRegister(rewinds)
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "save_commits_total",
			Help: "Group commits of the API's record saves on this node (saves_total / save_commits_total is the mean batch)."},
			func() float64 { c, _ := st.GroupCommits(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "saves_total",
			Help: "The API's record saves that went through a group commit on this node."},
			func() float64 { _, n := st.GroupCommits(); return float64(n) }))
	apiSrv.OnRewind(rewinds.Inc)
	apiSrv.OnClinic(rep.ClinicAdded)
	apiSrv.OnProtocols(rep.SetProtocols)

	fileCfg := cfg.Files
	fileCfg.Bucket = cfg.S3.Bucket
	fileSvc, err := files.New(fileCfg, st.DB(), files.NewS3Client(blobCfg), reg, log)
	if err != nil {
		return err
	}
	for _, rt := range fileSvc.Routes() {
		mux.HandleFunc(rt.Pattern, apiSrv.Clinic(rt.Handler))
	}
	apiSrv.RegisterThumbnails(mux, func(ctx context.Context, clinic ids.ID, sha string) ([]byte, error) {
		b, err := fileSvc.Thumbnail(ctx, clinic, sha)
		if errors.Is(err, files.ErrNoThumbnail) || errors.Is(err, files.ErrNotFound) {
			return nil, api.ErrNoThumbnail
		}
		return b, err
	})
	apiSrv.RegisterOriginals(mux, func(ctx context.Context, clinic ids.ID, sha string) (string, error) {
		d, err := fileSvc.DownloadURL(ctx, clinic, sha)
		if err != nil {
			return "", files.APIError(err)
		}
		return d.Get.URL, nil
	})
	backupSvc, err := backups.New(backups.Config{Bucket: cfg.S3.Bucket, Keep: cfg.Backups.Keep,
		ServerSideEncryption: cfg.Files.ServerSideEncryption}, st.DB(), files.NewS3Client(blobCfg), gen, log)
	if err != nil {
		return err
	}
	for _, rt := range backupSvc.Routes() {
		mux.HandleFunc(rt.Pattern, apiSrv.Clinic(rt.Handler))
	}
	if fileCfg.ColdBucket != "" {
		coldCfg := blobCfg
		coldCfg.Bucket = fileCfg.ColdBucket
		if err := blob.New(coldCfg).EnsureBucket(ctx); err != nil {
			log.Warn("s3 cold bucket not ready", "err", err)
		}
	}
	ret, err := retention.New(cfg.Retention, st, fileSvc, gen, rep.Notify, reg, log)
	if err != nil {
		return err
	}
	ret.Register(mux, apiSrv)
	// Browsers cannot set headers on a WebSocket: the events route also
	// takes the clinic's token as ?access_token=.
	serveEvents := apiSrv.Clinic(func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
		hub.ServeWS(w, r, clinic)
		return nil
	})
	mux.HandleFunc("GET /v1/clinics/{clinic}/events", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			if tok := sevents.RequestToken(r); tok != "" {
				r.Header.Set("Authorization", "Bearer "+tok)
			}
		}
		serveEvents(w, r)
	})
	mux.Handle("GET /viewer/", viewer.Handler(viewer.Config{Side: "cloud", APIPrefix: "/v1/clinics/{clinic}/",
		EventsPath: "/v1/clinics/{clinic}/events", Title: "scsync cloud"}))
	telemetry.RegisterDependencies(reg, func(ctx context.Context) map[string]string { return health.Ready(ctx).Checks })
	// Every route passes the guard: a route without a rule in api.Policy
	// is refused.
	guard := auth.NewGuard(mux, api.Policy(), apiSrv.Authenticate, log)
	guard.OnAudit(apiSrv.Audit)
	if onGuard != nil {
		onGuard(guard)
	}
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
	g.Go(func() error { return rep.Run(gctx) })
	g.Go(func() error { return edit.Run(gctx) })
	g.Go(func() error { return bus.Run(gctx) })
	g.Go(func() error { return fileSvc.Run(gctx) })
	g.Go(func() error { return ret.Run(gctx) })
	if runIdentity != nil {
		g.Go(func() error { return runIdentity(gctx) })
	}
	g.Go(func() error {
		select {
		case <-lease.Lost():
			return ids.ErrLeaseLost
		case <-gctx.Done():
			return nil
		}
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
	log.Info("sc-cloud serving", "addr", ln.Addr().String(), "tls", serverTLS != nil)
	if ready != nil {
		ready(ln.Addr().String())
	}
	err = g.Wait()
	log.Info("sc-cloud stopped")
	return err
}

// redisOptions connects to cfg's Redis, over TLS (trusting clientTLS's
// roots, checking the host name of redis.addr) when redis.tls is on.
func redisOptions(cfg config.Config, clientTLS *tls.Config) *redis.Options {
	o := &redis.Options{Addr: cfg.Redis.Addr, Password: cfg.Redis.Password}
	if cfg.Redis.TLS {
		o.TLSConfig = clientTLS.Clone()
		if host, _, err := net.SplitHostPort(cfg.Redis.Addr); err == nil {
			o.TLSConfig.ServerName = host
		}
	}
	return o
}
