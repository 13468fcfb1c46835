package tlsx

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// TestServerClientHandshake: a listener with Server's config serves TLS
// that a Client trusting the test CA accepts; a client without the CA and
// a plaintext client are refused.
func TestServerClientHandshake(t *testing.T) {
	t.Parallel()
	caFile, certFile, keyFile := testenv.PKI(t, t.TempDir())
	srvCfg, err := Server{CertFile: certFile, KeyFile: keyFile}.Config()
	if err != nil || srvCfg == nil {
		t.Fatalf("Server.Config = %v, %v", srvCfg, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		TLSConfig: srvCfg, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer func() { _ = srv.Close() }()
	url := "https://" + ln.Addr().String() + "/"

	hc, err := Client{CAFile: caFile}.HTTPClient(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET with the CA: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.TLS == nil || string(b) != "ok" {
		t.Fatalf("GET with the CA = %q over TLS %v, want ok over TLS", b, resp.TLS != nil)
	}
	plainRoots, _ := Client{}.HTTPClient(10 * time.Second)
	if _, err := plainRoots.Get(url); err == nil {
		t.Error("GET without the CA = nil error, want an unknown-authority error")
	}
	resp, err = (&http.Client{Timeout: 10 * time.Second}).Get("http://" + ln.Addr().String() + "/")
	if err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plaintext GET = %d, want 400 (a TLS listener)", resp.StatusCode)
		}
	}
	if _, err := (Server{}).Config(); err != nil {
		t.Errorf("Server{}.Config() = %v, want nil, nil (TLS off)", err)
	}
	if err := (Server{CertFile: certFile}).Validate("tls"); err == nil || !strings.Contains(err.Error(), "tls.key_file") {
		t.Errorf("half-set Validate = %v, want an error naming tls.key_file", err)
	}
	if _, err := (Client{CAFile: keyFile}).Config(); err == nil {
		t.Error("a CA file with no certificate = nil error, want one")
	}
}

func TestSecure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"https://cloud.example.com", true},
		{"http://cloud.example.com", false},
		{"amqps://u:p@broker:5671/vh", true},
		{"amqp://u:p@broker:5672/vh", false},
		{"rediss://redis:6380/0", true},
		{"redis://redis:6379/0", false},
		{"postgres://u:p@db/x?sslmode=verify-full", true},
		{"postgres://u:p@db/x?sslmode=require", true},
		{"postgres://u:p@db/x?sslmode=prefer", false},
		{"postgres://u:p@db/x", false},
		{"postgresql://u:p@db/x?sslmode=disable", false},
		{"host=db user=u sslmode=verify-ca", true},
		{"host=db user=u", false},
	} {
		if got, err := Secure(tc.url); err != nil || got != tc.want {
			t.Errorf("Secure(%q) = %v, %v; want %v", tc.url, got, err, tc.want)
		}
	}
	if _, err := Secure("ftp://x"); err == nil {
		t.Error("Secure(ftp://x) = nil error, want an unknown scheme")
	}
}

func TestRequire(t *testing.T) {
	t.Parallel()
	var r Require
	r.Listener("tls", Server{})
	r.Link("cloud.url", "http://cloud")
	r.Link("amqp.url", "amqps://broker")
	r.Link("lockd.url", "") // not in use
	r.Flag("redis.tls", false)
	err := r.Err()
	if !errors.Is(err, ErrPlaintext) {
		t.Fatalf("Err() = %v, want ErrPlaintext", err)
	}
	for _, want := range []string{"tls.cert_file", "cloud.url", "redis.tls"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Err() = %v, want it to name %s", err, want)
		}
	}
	for _, not := range []string{"amqp.url", "lockd.url"} {
		if strings.Contains(err.Error(), not) {
			t.Errorf("Err() = %v names %s, which is fine", err, not)
		}
	}
	var ok Require
	ok.Listener("tls", Server{CertFile: "c", KeyFile: "k"})
	ok.Link("cloud.url", "https://cloud")
	if err := ok.Err(); err != nil {
		t.Errorf("all TLS: Err() = %v, want nil", err)
	}
}
