package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/scsync/scsync/shared/buildinfo"
)

// Check reports whether one dependency is usable.
type Check func(ctx context.Context) error

// Health serves /healthz (the process is alive) and /readyz (every dependency
// it needs answers; the body names the ones that do not).
type Health struct {
	release  buildinfo.Release
	mu       sync.RWMutex
	checks   map[string]Check
	optional map[string]bool
}

// NewHealth returns a Health with no checks; /readyz names this binary's
// release (buildinfo).
func NewHealth() *Health {
	return &Health{checks: map[string]Check{}, optional: map[string]bool{}, release: buildinfo.Read().Release()}
}

// AddOptional registers a check of a dependency the server works without
// (a clinic without lockd edits "anyway"): a failure is reported under
// Degraded and does not make the server unready.
func (h *Health) AddOptional(name string, c Check) {
	h.Add(name, c)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.optional[name] = true
}

// Optional reports whether name was registered with AddOptional.
func (h *Health) Optional(name string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.optional[name]
}

// Add registers a readiness check under name (e.g. "postgres").
func (h *Health) Add(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = c
}

// Readiness is the body of /readyz.
type Readiness struct {
	Status string            `json:"status"` // "ready" or "unavailable"
	Checks map[string]string `json:"checks"` // name → "ok" or the error
	Down   []string          `json:"down,omitempty"`
	// Degraded lists optional dependencies that are down.
	Degraded []string `json:"degraded,omitempty"`
	// Build is the release and commit of the binary answering (during a
	// rolling upgrade, which nodes run which release).
	Build buildinfo.Release `json:"build"`
}

// Ready runs every check (in parallel, 3 s each) and reports the result.
func (h *Health) Ready(ctx context.Context) Readiness {
	h.mu.RLock()
	defer h.mu.RUnlock()
	res := Readiness{Status: "ready", Checks: map[string]string{}, Build: h.release}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, c := range h.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			err := c(cctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Checks[name] = err.Error()
				if h.optional[name] {
					res.Degraded = append(res.Degraded, name)
				} else {
					res.Down = append(res.Down, name)
				}
				return
			}
			res.Checks[name] = "ok"
		}()
	}
	wg.Wait()
	sort.Strings(res.Degraded)
	if len(res.Down) > 0 {
		sort.Strings(res.Down)
		res.Status = "unavailable"
	}
	return res
}

// Register mounts /healthz and /readyz on mux.
func (h *Health) Register(mux Router) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		res := h.Ready(r.Context())
		status := http.StatusOK
		if res.Status != "ready" {
			status = http.StatusServiceUnavailable
		}
		WriteJSON(w, status, res)
	})
}

// PingURL checks that url (a peer's /readyz or /healthz) answers 200.
func PingURL(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", url, resp.StatusCode)
	}
	return nil
}
