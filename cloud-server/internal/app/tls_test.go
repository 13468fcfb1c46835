package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/cloud-server/internal/config"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/tlsx"
)

// TestRedisTLS: with redis.tls the cloud's Redis link is TLS, trusting
// tls.ca_file, against a redis-server that speaks only TLS; without it the
// same server is unreachable.
func TestRedisTLS(t *testing.T) {
	t.Parallel()
	caFile, certFile, keyFile := testenv.PKI(t, t.TempDir())
	r := testenv.StartPrivateRedisTLS(t, certFile, keyFile, caFile)
	var cfg config.Config
	cfg.Redis.Addr, cfg.Redis.TLS = r.Addr, true
	clientTLS, err := tlsx.Client{CAFile: caFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := redis.NewClient(redisOptions(cfg, clientTLS))
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING over TLS = %v", err)
	}
	cfg.Redis.TLS = false
	plain := redis.NewClient(redisOptions(cfg, clientTLS))
	defer plain.Close()
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	if err := plain.Ping(pctx).Err(); err == nil {
		t.Error("plaintext PING to a TLS-only Redis = nil, want an error")
	}
	untrusted, _ := tlsx.Client{}.Config()
	cfg.Redis.TLS = true
	other := redis.NewClient(redisOptions(cfg, untrusted))
	defer other.Close()
	if err := other.Ping(pctx).Err(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("PING trusting only the system roots = %v, want a certificate error", err)
	}
}

// TestServesTLS: sc-cloud with tls.cert_file/key_file serves HTTPS (health
// and API) that a client trusting the test CA reaches; plaintext is refused.
func TestServesTLS(t *testing.T) {
	t.Parallel()
	caFile, certFile, keyFile := testenv.PKI(t, t.TempDir())
	amqpURL, _ := testenv.RabbitVhost(t)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.CAFile = certFile, keyFile, caFile
	cfg.Postgres.URL = testenv.PostgresDB(t)
	cfg.AMQP.URL = amqpURL
	cfg.Redis.Addr = testenv.RedisAddr()
	cfg.Redis.Prefix = testenv.Name("tlstest") + ":"
	cfg.S3.Endpoint = testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000")
	cfg.S3.AccessKey = testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync")
	cfg.S3.SecretKey = testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret")
	cfg.S3.Bucket = strings.ReplaceAll(testenv.Name("scsync-tls"), "_", "-")
	cfg.S3.PathStyle = true
	cfg.Auth.AdminToken = "admin-token-0123456789"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	dropBucketAtEnd(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addrc <- a })
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v after stop, want nil", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("sc-cloud did not stop")
		}
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("Run = %v before serving", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("sc-cloud not serving after 2m")
	}
	hc, err := tlsx.Client{CAFile: caFile}.HTTPClient(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("GET https /healthz: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.TLS == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET https /healthz = %d (tls %v), want 200 over TLS", resp.StatusCode, resp.TLS != nil)
	}
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/healthz"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plaintext GET /healthz = 200, want a refusal")
		}
	}
}
