// Package app wires one sc-cloud node together and runs it until its context
// ends: PostgreSQL, RabbitMQ, Redis (node id lease), S3, the replication
// consumers and relay, and the HTTP API with health and metrics.
package app

import (
	"context"
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
	"github.com/scsync/scsync/cloud-server/internal/replicate"
	"github.com/scsync/scsync/cloud-server/internal/retention"
	"github.com/scsync/scsync/cloud-server/internal/store"
	lockclient "github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/shared/amqpx"
	"github.com/scsync/scsync/shared/editing"
	sevents "github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/telemetry"
	"github.com/scsync/scsync/shared/viewer"
	"github.com/scsync/scsync/shared/wire"
)

// Run starts the node and blocks until ctx is done or a component fails.
// ready, when not nil, receives the bound HTTP address once serving.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string)) error {
	reg := telemetry.NewRegistry()

	rdb := redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr, Password: cfg.Redis.Password})
	defer rdb.Close()
	lease, err := ids.LeaseCloudNode(ctx, rdb, cfg.Redis.Prefix, cfg.Redis.LeaseTTL, log)
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
		AccessKey: cfg.S3.AccessKey, SecretKey: cfg.S3.SecretKey, PathStyle: cfg.S3.PathStyle}
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
	broker, err := amqpx.New(amqpx.Config{URL: cfg.AMQP.URL, ConnectionName: name, Prefetch: cfg.AMQP.Prefetch},
		wire.BaseTopology(), log, reg)
	if err != nil {
		return err
	}
	rep := replicate.New(st, broker, log, reg)

	health := httpapi.NewHealth()
	health.Add("postgres", st.Ping)
	health.Add("rabbitmq", func(context.Context) error { return broker.Ready() })
	health.Add("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	health.Add("s3", blobs.Ping)

	mux := http.NewServeMux()
	health.Register(mux)
	mux.Handle("GET /metrics", telemetry.Handler(reg))
	if telemetry.MountPprof(mux) {
		log.Warn("profiling endpoints are on (/debug/pprof/, SCSYNC_PPROF=1)")
	}
	var locker editing.Locker = editing.NoLocker{}
	if cfg.Lockd.URL != "" {
		locker = lockclient.New(cfg.Lockd.URL, cfg.Lockd.Token, nil).Locker()
		health.AddOptional("lockd", func(ctx context.Context) error { return httpapi.PingURL(ctx, cfg.Lockd.URL+"/readyz") })
	}
	hub := sevents.NewHub(sevents.HubConfig{}, log)
	defer hub.Close()
	bus, err := sevents.NewBus(broker, sevents.BusConfig{Name: fmt.Sprintf("cloud.%d", lease.Node())}, hub.Publish, log)
	if err != nil {
		return err
	}
	notes := &notifier{log: log, bus: bus}
	rep.OnAccepted(notes.accepted)
	edit, err := editing.New(ctx, st.DB(), locker, api.EditRecords{St: st, IDs: gen}, notes.note, editing.Config{
		Side: string(wire.OriginCloud), LockTTL: cfg.Edit.LockTTL, IdleWarn: cfg.Edit.IdleWarn, IdleGrace: cfg.Edit.IdleGrace,
	}, log)
	if err != nil {
		return err
	}
	apiSrv := api.New(st, edit, gen, cfg.Auth.AdminToken, rep.Notify, log)
	apiSrv.Register(mux)
	rewinds := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "cloud", Name: "clinic_rewinds_total",
		Help: "Clinics found older than what they had acknowledged (restored from a backup or wiped); the cloud re-sent what they lost."})
	reg.MustRegister(rewinds)
	apiSrv.OnRewind(rewinds.Inc)
	apiSrv.OnClinic(rep.ClinicAdded)

	if err := files.Migrate(st.DB()); err != nil {
		return err
	}
	fileCfg := cfg.Files
	fileCfg.Bucket = cfg.S3.Bucket
	fileSvc, err := files.New(fileCfg, st.DB(), files.NewS3Client(blobCfg), reg, log)
	if err != nil {
		return err
	}
	for _, rt := range fileSvc.Routes() {
		mux.HandleFunc(rt.Pattern, apiSrv.Clinic(rt.Handler))
	}
	backupSvc, err := backups.New(backups.Config{Bucket: cfg.S3.Bucket, Keep: cfg.Backups.Keep}, st.DB(), files.NewS3Client(blobCfg), gen, log)
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
	srv := httpapi.NewServer(cfg.Listen, httpapi.Recover(log, mux))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return broker.Run(gctx) })
	g.Go(func() error { return rep.Run(gctx) })
	g.Go(func() error { return edit.Run(gctx) })
	g.Go(func() error { return bus.Run(gctx) })
	g.Go(func() error { return fileSvc.Run(gctx) })
	g.Go(func() error { return ret.Run(gctx) })
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
	log.Info("sc-cloud serving", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}
	err = g.Wait()
	log.Info("sc-cloud stopped")
	return err
}
