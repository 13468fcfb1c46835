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
	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/testenv"
)

// TestRunLeavesNoGoroutines: a replica that served requests and was stopped
// leaves nothing running. Not parallel: it counts the process's goroutines,
// and Go runs every parallel test only after the sequential ones.
func TestRunLeavesNoGoroutines(t *testing.T) {
	_, prefix := testenv.Redis(t)
	cfg := testConfig(testenv.RedisAddr(), prefix)
	tr := &http.Transport{}
	before := runtime.NumGoroutine()

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
	tr.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	testenv.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines after Run returned, %d before", n, before)
		}
		return nil
	})
}
