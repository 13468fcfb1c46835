package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/shared/buildinfo"
	"github.com/scsync/scsync/shared/httpapi"
)

// TestStatusShowsRelease: `sc-local status` names the running server's
// release, commit and protocol range.
func TestStatusShowsRelease(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/status":
			_, _ = w.Write([]byte(`{"clinic":"7","build":{"version":"1.4.0","commit":"62b918d1a2b3","go":"go1.26.8"},"protocols":{"min":2,"max":3}}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	var out bytes.Buffer
	if err := Status(context.Background(), &out, srv.URL); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"release           1.4.0 (commit 62b918d1a2b3)", "protocol          2-3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Status output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestDoctorShowsRelease: `sc-local doctor` prints its own release and the
// running server's (from /readyz), and says when they differ.
func TestDoctorShowsRelease(t *testing.T) {
	for _, tt := range []struct {
		name    string
		running buildinfo.Release
		differs bool
	}{
		{"same", buildinfo.Read().Release(), false},
		{"older", buildinfo.Release{Version: "0.9.0", Commit: "edfbac7faf77", Go: "go1.26.8"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"status":"ok"}`)) })
			mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
				httpapi.WriteJSON(w, http.StatusServiceUnavailable, httpapi.Readiness{Status: "unavailable", Build: tt.running})
			})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			var cfg config.Config
			cfg.Listen = strings.TrimPrefix(srv.URL, "http://")
			cfg.DataDir = t.TempDir()
			var out bytes.Buffer
			_ = Doctor(context.Background(), &out, cfg) // the cloud and the broker are not configured
			self := buildinfo.Read().String("sc-local")
			want := "running at " + srv.URL + ", release " + release(tt.running)
			if !strings.Contains(out.String(), "release  "+self) || !strings.Contains(out.String(), want) {
				t.Errorf("Doctor output lacks %q or %q:\n%s", self, want, out.String())
			}
			if got := strings.Contains(out.String(), "not this command's release"); got != tt.differs {
				t.Errorf("Doctor says the releases differ: %v, want %v:\n%s", got, tt.differs, out.String())
			}
		})
	}
}
