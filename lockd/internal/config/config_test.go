package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/config"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v, want nil", err)
	}
}

// TestExampleConfig keeps deployments/lockd.example.yaml loadable.
func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "..", "..", "deployments", "lockd.example.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("example config not found: %v", err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s) = %v", path, err)
	}
	if c.Auth.Empty() || c.Nodes.Quarantine < c.Nodes.TTL {
		t.Errorf("Load(%s) = %+v, want tokens and a quarantine", path, c)
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("LOCKD_REDIS_TIMEOUT", "750ms")
	t.Setenv("LOCKD_AUTH_SERVICE_TOKENS", "service-token-aaaaaaaa,service-token-bbbbbbbb")
	t.Setenv("LOCKD_LOCKS_MAX_TTL", "2m")
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.Timeout != 750*time.Millisecond || len(c.Auth.ServiceTokens) != 2 || c.Locks.MaxTTL != 2*time.Minute {
		t.Errorf("Load with env = %+v", c)
	}
}

func TestValidateNamesTheSetting(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"short token", func(c *Config) { c.Auth.AdminToken = "short" }, "auth.admin_token"},
		{"bad digest", func(c *Config) { c.Auth.ServiceTokens = []string{"sha256:abc"} }, "auth.service_tokens[0]"},
		{"repeated token", func(c *Config) {
			c.Auth.AdminToken = "the-same-token-twice"
			c.Auth.ServiceTokens = []string{"the-same-token-twice"}
		}, "repeats"},
		{"bad clinic", func(c *Config) { c.Auth.ClinicTokens = map[string]string{"clinic-token-123456": "x"} }, "positive decimal id"},
		{"ttl bounds", func(c *Config) { c.Locks.DefaultTTL = time.Hour }, "locks.default_ttl"},
		{"quarantine", func(c *Config) { c.Nodes.Quarantine = time.Second }, "nodes.quarantine"},
		{"tls half", func(c *Config) { c.TLS.CertFile = "cert.pem" }, "tls.cert_file"},
		{"redis timeout", func(c *Config) { c.Redis.Timeout = 0 }, "redis.timeout"},
		{"prefix", func(c *Config) { c.Redis.Prefix = "" }, "redis.prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(&c)
			err := c.Validate()
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want ErrInvalid naming %q", err, tt.want)
			}
		})
	}
}
