// Package app runs one lockd replica: stateless, all state in Redis, so any
// number of replicas can serve behind a load balancer.
package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/lockd/internal/api"
	"github.com/scsync/scsync/lockd/internal/config"
	"github.com/scsync/scsync/lockd/internal/store"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/redisx"
	"github.com/scsync/scsync/shared/telemetry"
	"github.com/scsync/scsync/shared/tlsx"
)

// Run serves until ctx ends, then finishes in-flight requests (for at most
// cfg.ShutdownTimeout). ready, when not nil, receives the bound address.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	reg := telemetry.NewRegistry()
	rdb, err := newRedis(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := store.New(rdb, store.Options{
		Prefix:     cfg.Redis.Prefix,
		NodePrefix: cfg.Nodes.Prefix,
		Timeout:    cfg.Redis.Timeout,
		NodeTTL:    cfg.Nodes.TTL,
		Quarantine: cfg.Nodes.Quarantine,
	})
	apiSrv, err := api.New(st, cfg.Auth, api.Options{
		DefaultTTL: cfg.Locks.DefaultTTL,
		MinTTL:     cfg.Locks.MinTTL,
		MaxTTL:     cfg.Locks.MaxTTL,
	}, log, reg)
	if err != nil {
		return err
	}
	if cfg.Auth.Empty() {
		log.Warn("no auth tokens configured: every API call will be refused (set auth.* in the config)")
	}

	health := httpapi.NewHealth()
	health.Add("redis", st.Ping)
	mux := http.NewServeMux()
	health.Register(mux)
	mux.Handle("GET /metrics", telemetry.Handler(reg))
	if telemetry.MountPprof(mux) {
		log.Warn("profiling endpoints are on (/debug/pprof/, SCSYNC_PPROF=1)")
	}
	apiSrv.Register(mux)
	mux.HandleFunc("/", api.NotFound)

	telemetry.RegisterDependencies(reg, func(ctx context.Context) map[string]string { return health.Ready(ctx).Checks })
	srv := newServer(httpapi.Recover(log, telemetry.HTTPMetrics(reg)(mux)), log)
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	ln = lingerListener{ln}
	tlsOn := cfg.TLS.CertFile != ""
	if tlsOn {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("tls: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ln) })
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		return srv.ShutdownWithContext(sctx)
	})
	log.Info("lockd serving", "addr", ln.Addr().String(), "tls", tlsOn, "redis", cfg.Redis.Addr, "prefix", cfg.Redis.Prefix)
	if ready != nil {
		ready(ln.Addr().String())
	}
	err = g.Wait()
	log.Info("lockd stopped")
	return err
}

// newRedis returns a client that fails fast: every dial, read and write is
// bounded by redis.timeout, and failed commands are not retried, because a
// retried script could act twice (a lost reply to a release, then "expired").
func newRedis(cfg config.Config) (*redis.Client, error) {
	opts := &redis.Options{
		Addr:                  cfg.Redis.Addr,
		Username:              cfg.Redis.Username,
		Password:              cfg.Redis.Password,
		DialTimeout:           cfg.Redis.Timeout,
		ReadTimeout:           cfg.Redis.Timeout,
		WriteTimeout:          cfg.Redis.Timeout,
		PoolTimeout:           cfg.Redis.Timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         2,
	}
	if cfg.Redis.TLS {
		tc, err := tlsx.Client{CAFile: cfg.TLS.CAFile}.Config()
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		tc.ServerName, _, _ = net.SplitHostPort(cfg.Redis.Addr)
		opts.TLSConfig = tc
	}
	return redisx.NewClient(opts, cfg.Redis.Sentinel), nil
}

// RedisLogger adapts log for go-redis's own messages (redis.SetLogger), so
// every line lockd writes is JSON.
func RedisLogger(log *slog.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return redisLogger{log}
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
