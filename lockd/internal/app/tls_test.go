package app

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/tlsx"
)

// TestTLS: lockd with require_tls serves HTTPS and reaches a TLS-only
// Redis, both trusting a test CA made here; /readyz over HTTPS says Redis
// is ok. The same settings without redis.tls refuse to start.
func TestTLS(t *testing.T) {
	t.Parallel()
	caFile, certFile, keyFile := testenv.PKI(t, t.TempDir())
	r := testenv.StartPrivateRedisTLS(t, certFile, keyFile, caFile)
	cfg := testConfig(r.Addr, testenv.Name("lockdtls")+":")
	cfg.RequireTLS = true
	cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.CAFile = certFile, keyFile, caFile
	cfg.Redis.Timeout = 5 * time.Second

	plain := cfg
	plain.Redis.TLS = false
	if err := plain.Validate(); err == nil || !strings.Contains(err.Error(), "redis.tls") {
		t.Fatalf("Validate(require_tls, plaintext Redis) = %v, want an error naming redis.tls", err)
	}
	cfg.Redis.TLS = true
	base := strings.Replace(start(t, cfg, nil), "http://", "https://", 1)
	hc, err := tlsx.Client{CAFile: caFile}.HTTPClient(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(base + "/readyz")
	if err != nil {
		t.Fatalf("GET https /readyz: %v", err)
	}
	defer resp.Body.Close()
	var rd httpapi.Readiness
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil {
		t.Fatal(err)
	}
	if resp.TLS == nil || resp.StatusCode != http.StatusOK || rd.Checks["redis"] != "ok" {
		t.Fatalf("GET https /readyz = %d %+v (tls %v), want 200 with Redis ok over TLS", resp.StatusCode, rd, resp.TLS != nil)
	}
	// Over TLS too, a large request refused unread is answered, not reset.
	huge := `{"resource":"p/1","user":"` + strings.Repeat("a", 4<<20) + `"}`
	for range 3 {
		req, err := http.NewRequest(http.MethodPost, base+"/v1/locks/acquire", strings.NewReader(huge))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer wrong")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("POST https 4 MiB with a wrong token: %v", err)
		}
		var e lockapi.Error
		err = json.NewDecoder(resp.Body).Decode(&e)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusUnauthorized || e.Code != lockapi.CodeUnauthorized {
			t.Fatalf("POST https 4 MiB with a wrong token = %d %+v (%v), want 401 unauthorized", resp.StatusCode, e, err)
		}
	}
	hc.CloseIdleConnections()
}
