// Package tlsx is TLS as a setting, the same on every binary: a listener's
// certificate and key files, a client's extra CA file, and the check behind
// require_tls, which refuses a configuration with any plaintext link or
// listener and names the setting.
package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// ErrPlaintext is a link or listener without TLS where require_tls is on.
var ErrPlaintext = errors.New("require_tls: plaintext")

// Server is a listener's TLS setting: HTTPS when both files are set.
type Server struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether the listener serves TLS.
func (s Server) Enabled() bool { return s.CertFile != "" || s.KeyFile != "" }

// Validate names a half-set pair (prefix is the setting, e.g. "tls").
func (s Server) Validate(prefix string) error {
	if (s.CertFile == "") != (s.KeyFile == "") {
		return fmt.Errorf("%s.cert_file and %s.key_file must be set together", prefix, prefix)
	}
	return nil
}

// Config loads the key pair; nil, nil when TLS is off. TLS 1.2 at least.
func (s Server) Config() (*tls.Config, error) {
	if !s.Enabled() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsx: load key pair: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}

// Client is a client's TLS setting: CAFile, when set, is trusted in
// addition to the system's roots (a private CA of the cloud or the clinic).
type Client struct {
	CAFile string `yaml:"ca_file"`
}

// Config returns the client TLS configuration (TLS 1.2 at least).
func (c Client) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("tlsx: ca file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tlsx: ca file %s holds no PEM certificate", c.CAFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// HTTPClient returns an HTTP client trusting c's CA, with an overall
// timeout (0: none) and bounded connect and header waits.
func (c Client) HTTPClient(timeout time.Duration) (*http.Client, error) {
	cfg, err := c.Config()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.Clone()
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// secureSchemes are URL schemes that are TLS; plainSchemes are not.
var (
	secureSchemes = map[string]bool{"https": true, "amqps": true, "rediss": true, "wss": true}
	plainSchemes  = map[string]bool{"http": true, "amqp": true, "redis": true, "ws": true}
	// sslmodes of PostgreSQL that refuse a plaintext connection.
	secureSSLModes = map[string]bool{"require": true, "verify-ca": true, "verify-full": true}
	dsnSSLMode     = regexp.MustCompile(`(?:^|\s)sslmode\s*=\s*'?([a-z-]+)`)
)

// Secure reports whether a link URL is encrypted: https, amqps, rediss,
// wss, or a PostgreSQL URL or key=value DSN with sslmode require,
// verify-ca or verify-full (libpq's default, prefer, falls back to
// plaintext, so it is not).
func Secure(raw string) (bool, error) {
	raw = strings.TrimSpace(raw)
	if strings.HasPrefix(raw, "postgres://") || strings.HasPrefix(raw, "postgresql://") {
		u, err := url.Parse(raw)
		if err != nil {
			return false, errors.New("does not parse as a URL")
		}
		return secureSSLModes[u.Query().Get("sslmode")], nil
	}
	if !strings.Contains(raw, "://") && strings.Contains(raw, "=") { // key=value DSN
		m := dsnSSLMode.FindStringSubmatch(raw)
		return m != nil && secureSSLModes[m[1]], nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return false, errors.New("does not parse as a URL")
	}
	switch s := strings.ToLower(u.Scheme); {
	case secureSchemes[s]:
		return true, nil
	case plainSchemes[s]:
		return false, nil
	default:
		return false, fmt.Errorf("unknown scheme %q", u.Scheme)
	}
}

// Require collects what require_tls refuses: links that are not Secure and
// listeners without TLS, each named by its setting.
type Require struct {
	errs []error
}

// Link checks the link URL of setting (empty URLs are links not in use).
func (r *Require) Link(setting, raw string) {
	if strings.TrimSpace(raw) == "" {
		return
	}
	ok, err := Secure(raw)
	switch {
	case err != nil:
		r.errs = append(r.errs, fmt.Errorf("%w: %s: %w", ErrPlaintext, setting, err))
	case !ok:
		r.errs = append(r.errs, fmt.Errorf("%w: %s is not encrypted (use https://, amqps://, rediss://, or sslmode=verify-full for PostgreSQL)", ErrPlaintext, setting))
	}
}

// Flag checks a link whose TLS is a boolean setting.
func (r *Require) Flag(setting string, on bool) {
	if !on {
		r.errs = append(r.errs, fmt.Errorf("%w: %s must be true", ErrPlaintext, setting))
	}
}

// Listener checks a listener's TLS setting (prefix names it, e.g. "tls").
func (r *Require) Listener(prefix string, s Server) {
	if !s.Enabled() {
		r.errs = append(r.errs, fmt.Errorf("%w: %s.cert_file and %s.key_file are required (the listener would be plaintext)", ErrPlaintext, prefix, prefix))
	}
}

// Err is every refusal joined, or nil.
func (r *Require) Err() error { return errors.Join(r.errs...) }
