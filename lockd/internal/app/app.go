// Package app runs one lockd replica: stateless, all state in Redis, so any
// number of replicas can serve behind a load balancer.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/lockd/internal/config"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/telemetry"
)

// Run serves until ctx ends. ready, when not nil, receives the bound address.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(addr string)) error {
	reg := telemetry.NewRegistry()
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr, Password: cfg.Redis.Password})
	defer rdb.Close()

	health := httpapi.NewHealth()
	health.Add("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	mux := http.NewServeMux()
	health.Register(mux)
	mux.Handle("GET /metrics", telemetry.Handler(reg))

	srv := httpapi.NewServer(cfg.Listen, httpapi.Recover(log, mux))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	g, gctx := errgroup.WithContext(ctx)
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
		return srv.Shutdown(sctx)
	})
	log.Info("lockd serving", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}
	return g.Wait()
}
