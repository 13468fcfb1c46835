package cli

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/shared/testenv"
)

// TestUseLocalTLS: the commands reach a TLS-only listener whose
// certificate names the server's LAN name only (not the loopback address
// they dial), trusting the listener's own certificate, with the API token;
// a listener presenting another certificate is refused, and so is the
// same listener when the commands are not told it serves TLS.
func TestUseLocalTLS(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := testenv.PKIFor(t, dir, "clinic-server.lan")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var auth string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	prev := http.DefaultClient
	t.Cleanup(func() { http.DefaultClient = prev })

	cfg := config.Default()
	cfg.Listen = strings.TrimPrefix(srv.URL, "https://")
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	base, err := UseLocal(cfg, "the-api-token-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	if base != srv.URL {
		t.Fatalf("base = %s, want %s", base, srv.URL)
	}
	var out struct{ OK bool }
	if err := send(context.Background(), http.MethodGet, base+"/v1/status", nil, &out); err != nil || !out.OK {
		t.Fatalf("GET over TLS = %v %+v", err, out)
	}
	if auth != "Bearer the-api-token-0123456789" {
		t.Errorf("Authorization = %q, want the API token", auth)
	}

	// Another certificate for the same name (another CA): refused.
	_, otherCert, otherKey := testenv.PKIFor(t, t.TempDir(), "clinic-server.lan")
	cfg.TLS.CertFile, cfg.TLS.KeyFile = otherCert, otherKey
	if base, err = UseLocal(cfg, "the-api-token-0123456789"); err != nil {
		t.Fatal(err)
	}
	if err := send(context.Background(), http.MethodGet, base+"/v1/status", nil, &out); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET to a listener presenting another certificate = %v, want a certificate error", err)
	}

	// Not told the listener is TLS: plaintext to it fails.
	cfg.TLS.CertFile, cfg.TLS.KeyFile = "", ""
	if base, err = UseLocal(cfg, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(base, "http://") {
		t.Fatalf("base without TLS = %s", base)
	}
	if err := send(context.Background(), http.MethodGet, base+"/v1/status", nil, &out); err == nil {
		t.Error("plaintext GET to a TLS listener succeeded")
	}
}

func TestLocalURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:8080": "http://127.0.0.1:8080",
		":8080":          "http://127.0.0.1:8080",
		"0.0.0.0:8080":   "http://127.0.0.1:8080",
		"[::]:8080":      "http://[::1]:8080",
		"clinic:8443":    "http://clinic:8443",
	} {
		cfg := config.Default()
		cfg.Listen = listen
		if got := cfg.LocalURL(); got != want {
			t.Errorf("LocalURL(%q) = %s, want %s", listen, got, want)
		}
	}
	cfg := config.Default()
	cfg.TLS.CertFile, cfg.TLS.KeyFile = "c", "k"
	if got := cfg.LocalURL(); got != "https://127.0.0.1:8080" {
		t.Errorf("LocalURL with TLS = %s", got)
	}
}
