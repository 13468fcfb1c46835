package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestPrivateRabbitRestart(t *testing.T) {
	t.Parallel()
	r := StartPrivateRabbit(t)
	declare := func(passive bool) error {
		conn, err := amqp.Dial(r.URL)
		if err != nil {
			return err
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		args := amqp.Table{"x-queue-type": "quorum"}
		if passive {
			_, err = ch.QueueDeclarePassive("survivor", true, false, false, false, args)
		} else {
			_, err = ch.QueueDeclare("survivor", true, false, false, false, args)
		}
		return err
	}
	if err := declare(false); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if _, err := amqp.Dial(r.URL); err == nil {
		t.Fatal("dial succeeded while the private broker was killed")
	}
	r.Start()
	// A durable quorum queue survives the crash.
	CheckFor(t, 30e9, 200e6, func() error { return declare(true) })
}

// TestPrivateRabbitTLS: the TLS node accepts AMQPS from a client trusting
// the test CA, and refuses plaintext AMQP and a client without the CA; its
// management API answers over HTTPS only.
func TestPrivateRabbitTLS(t *testing.T) {
	t.Parallel()
	caFile, certFile, keyFile := PKI(t, t.TempDir())
	r := StartPrivateRabbitTLS(t, RabbitTLS{CAFile: caFile, CertFile: certFile, KeyFile: keyFile, Managed: true})
	hc, err := caClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.MgmtURL, "https://") {
		t.Fatalf("MgmtURL = %s, want https://", r.MgmtURL)
	}
	if _, err := mgmtDoWith(hc, r.MgmtURL, "guest", "guest", "GET", "/api/whoami"); err != nil {
		t.Errorf("management over HTTPS: %v", err)
	}
	if _, err := mgmtDo("http"+strings.TrimPrefix(r.MgmtURL, "https"), "guest", "guest", "GET", "/api/whoami"); err == nil {
		t.Error("plaintext management call answered, want a refusal")
	}
	if !strings.HasPrefix(r.URL, "amqps://") {
		t.Fatalf("URL = %s, want amqps://", r.URL)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	conn, err := amqp.DialTLS(r.URL, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("AMQPS with the CA: %v", err)
	}
	if st := conn.ConnectionState(); !st.HandshakeComplete {
		t.Error("AMQPS connection without a TLS handshake")
	}
	_ = conn.Close()
	if c, err := amqp.DialTLS(r.URL, &tls.Config{MinVersion: tls.VersionTLS12}); err == nil {
		_ = c.Close()
		t.Error("AMQPS without the CA connected, want a certificate error")
	}
	plain := "amqp://" + strings.TrimPrefix(r.URL, "amqps://")
	if c, err := amqp.DialConfig(plain, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)}); err == nil {
		_ = c.Close()
		t.Error("plaintext AMQP to the TLS listener connected, want a refusal")
	}
}

// TestLaunchPrivateRabbit starts a managed node as a program that is not a
// test does (the benchmarks): its management API answers, and Kill takes
// the whole node down.
func TestLaunchPrivateRabbit(t *testing.T) {
	t.Parallel()
	if _, err := rabbitServerBin(); err != nil {
		Unavailable(t, "rabbitmq-server", err)
	}
	r, err := LaunchPrivateRabbit(t.TempDir(), true)
	if r != nil {
		defer r.Kill()
	}
	if err != nil {
		t.Fatal(err)
	}
	if r.ProcessGroup() <= 0 {
		t.Fatalf("ProcessGroup() = %d", r.ProcessGroup())
	}
	if _, err := mgmtDo(r.MgmtURL, "guest", "guest", "GET", "/api/whoami"); err != nil {
		t.Fatalf("management API: %v", err)
	}
	conn, err := amqp.Dial(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()
	r.Kill()
	if _, err := amqp.Dial(r.URL); err == nil {
		t.Fatal("dial succeeded after Kill")
	}
}

// TestPresentsTheNodesOwnCertificate: a TLS node's boot waits for its own
// certificate on its port, not for any TLS server there (another test's
// TLS Redis once took a booting node's port).
func TestPresentsTheNodesOwnCertificate(t *testing.T) {
	t.Parallel()
	_, certFile, keyFile := PKI(t, t.TempDir())
	_, otherCert, _ := PKI(t, t.TempDir())
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveEach(ln, func(c net.Conn) { _ = c.(*tls.Conn).Handshake() })
	for _, tc := range []struct {
		file string
		want bool
	}{{certFile, true}, {otherCert, false}} {
		der, err := certDER(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if got := presents(c, der); got != tc.want {
			t.Errorf("presents(%s) = %v, want %v", tc.file, got, tc.want)
		}
		_ = c.Close()
	}
}
