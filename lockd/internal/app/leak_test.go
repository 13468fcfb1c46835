package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/lockd/internal/config"
	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/testenv"
)

// TestRunLeavesNoGoroutines: a replica that served requests and was stopped
// leaves nothing running. Not parallel: it counts the process's goroutines,
// and Go runs every parallel test only after the sequential ones.
func TestRunLeavesNoGoroutines(t *testing.T) {
	_, prefix := testenv.Redis(t)
	cfg := testConfig(testenv.RedisAddr(), prefix)
	// fasthttp keeps one goroutine per process that refreshes its Date
	// header, started by the first answer: let a first replica start it.
	serveOnce(t, cfg)
	before := runtime.NumGoroutine()
	serveOnce(t, cfg)
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines after Run returned, %d before", n, before)
		}
		return nil
	})
}

// serveOnce runs a replica, acquires and releases a lock through it, and
// stops it.
func serveOnce(t *testing.T, cfg config.Config) {
	t.Helper()
	tr := &http.Transport{}

	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { addrc <- a })
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	c := client.New(base, serviceToken, &http.Client{Transport: tr, Timeout: 5 * time.Second})
	g, err := c.Acquire(context.Background(), acquireReq(clinicA, "patient/1", "anna", lockapi.SideCloud))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Release(context.Background(), g.ReleaseRequest()); err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
