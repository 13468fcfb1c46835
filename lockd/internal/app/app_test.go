package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/scsync/scsync/lockd/internal/config"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/testenv"
)

func start(t *testing.T, redisAddr string) string {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Redis.Addr = redisAddr
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { addrc <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case a := <-addrc:
		return "http://" + a
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("lockd did not start")
	}
	return ""
}

func readyz(t *testing.T, base string) (int, httpapi.Readiness) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r httpapi.Readiness
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, r
}

func TestReadyz(t *testing.T) {
	testenv.Redis(t) // the shared Redis must be there
	if code, r := readyz(t, start(t, testenv.RedisAddr())); code != 200 || r.Checks["redis"] != "ok" {
		t.Errorf("readyz with Redis up = %d %+v, want 200", code, r)
	}
	// A Redis nobody listens on: readyz names it.
	if code, r := readyz(t, start(t, "127.0.0.1:1")); code != 503 || len(r.Down) != 1 || r.Down[0] != "redis" {
		t.Errorf("readyz with Redis down = %d %+v, want 503 naming redis", code, r)
	}
}
