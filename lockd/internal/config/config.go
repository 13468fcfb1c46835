// Package config is lockd's configuration: defaults, then a YAML file, then
// LOCKD_* environment variables; validated before start.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/scsync/scsync/shared/config"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/redisx"
	"github.com/scsync/scsync/shared/tlsx"
)

// EnvPrefix prefixes every environment override (LOCKD_REDIS_ADDR …).
const EnvPrefix = "LOCKD"

// MinTokenLen is the shortest bearer token accepted in the configuration.
const MinTokenLen = 16

// Config of one lockd replica.
type Config struct {
	Listen string `yaml:"listen"`
	// TLS serves HTTPS when both files are set; ca_file is trusted
	// (besides the system's roots) on the Redis link.
	TLS struct {
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
		CAFile   string `yaml:"ca_file"`
	} `yaml:"tls"`
	// RequireTLS refuses to start with a plaintext listener or Redis link.
	RequireTLS bool `yaml:"require_tls"`
	Redis      struct {
		Addr     string `yaml:"addr"`
		Username string `yaml:"username"`
		Password string `yaml:"password"`
		// Prefix starts every lock and fencing key.
		Prefix string `yaml:"prefix"`
		// TLS connects to Redis over TLS.
		TLS bool `yaml:"tls"`
		// Timeout bounds dialling, each read and write, and each whole
		// operation, so a request during an outage fails fast with 503
		// instead of hanging.
		Timeout time.Duration `yaml:"timeout"`
		// Sentinel, when its addrs are set, finds the master through Redis
		// Sentinel (addr is then unused): docs/cloud-ops.md.
		Sentinel redisx.Sentinel `yaml:"sentinel"`
	} `yaml:"redis"`
	Auth Auth `yaml:"auth"`
	// Locks bounds the TTL a holder may ask for.
	Locks struct {
		DefaultTTL time.Duration `yaml:"default_ttl"`
		MinTTL     time.Duration `yaml:"min_ttl"`
		MaxTTL     time.Duration `yaml:"max_ttl"`
	} `yaml:"locks"`
	// Nodes rules the Snowflake node id leases handed to cloud nodes.
	Nodes struct {
		// Prefix starts the node lease keys. The default equals sc-cloud's
		// redis.prefix, so leases taken through lockd and leases taken
		// directly with shared/ids.LeaseCloudNode share one key space and
		// never hand out the same id.
		Prefix string        `yaml:"prefix"`
		TTL    time.Duration `yaml:"ttl"`
		// Quarantine is how long an expired or released node id stays
		// unleasable, so ids minted by its last holder can never collide
		// with the next holder's. It must cover the clock skew between
		// cloud nodes and the longest pause a node may take.
		Quarantine time.Duration `yaml:"quarantine"`
	} `yaml:"nodes"`
	Log struct {
		Format string `yaml:"format"`
		Level  string `yaml:"level"`
	} `yaml:"log"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Auth lists the bearer tokens lockd accepts. A token is given either as is
// or as "sha256:<hex of its SHA-256>", so the file need not hold usable
// credentials. With no token at all lockd still starts (health and metrics
// work) but refuses every API call.
type Auth struct {
	// AdminToken may force-release any lock, and do what a service may.
	AdminToken string `yaml:"admin_token"`
	// ServiceTokens are trusted servers (sc-cloud nodes) that act for the
	// clinic named in each request and lease Snowflake node ids.
	ServiceTokens []string `yaml:"service_tokens"`
	// ClinicTokens maps a clinic's token to its clinic id: the bearer acts
	// for that clinic only (a clinic's sc-local uses it). Maps cannot be set
	// from the environment; use the YAML file.
	ClinicTokens map[string]string `yaml:"clinic_tokens"`
}

// Default returns the built-in defaults.
func Default() Config {
	var c Config
	c.Listen = "127.0.0.1:8090"
	c.Redis.Addr = "127.0.0.1:6379"
	c.Redis.Prefix = "scsync:lock:"
	c.Redis.Timeout = 2 * time.Second
	c.Locks.DefaultTTL = 30 * time.Second
	c.Locks.MinTTL = time.Second
	c.Locks.MaxTTL = 10 * time.Minute
	c.Nodes.Prefix = "scsync:"
	c.Nodes.TTL = 30 * time.Second
	c.Nodes.Quarantine = time.Minute
	c.Log.Format = "json"
	c.Log.Level = "info"
	c.ShutdownTimeout = 10 * time.Second
	return c
}

// Load reads path (optional) and the environment over the defaults.
func Load(path string) (Config, error) {
	c := Default()
	if err := config.Load(path, EnvPrefix, &c); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate names every setting that is wrong.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if strings.TrimSpace(c.Listen) == "" {
		bad("listen is required")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls.cert_file and tls.key_file must be set together")
	}
	if strings.TrimSpace(c.Redis.Addr) == "" && !c.Redis.Sentinel.Enabled() {
		bad("redis.addr is required (or redis.sentinel.addrs)")
	}
	if err := c.Redis.Sentinel.Validate("redis.sentinel"); err != nil {
		errs = append(errs, err)
	}
	if c.RequireTLS {
		var req tlsx.Require
		req.Listener("tls", tlsx.Server{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile})
		req.Flag("redis.tls", c.Redis.TLS)
		if err := req.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Redis.Prefix == "" {
		bad("redis.prefix is required (keys of other tenants of the Redis must not collide)")
	}
	if c.Redis.Timeout <= 0 {
		bad("redis.timeout must be positive")
	}
	if c.Locks.MinTTL < 100*time.Millisecond {
		bad("locks.min_ttl must be at least 100ms")
	}
	if c.Locks.MaxTTL < c.Locks.MinTTL {
		bad("locks.max_ttl must be at least locks.min_ttl")
	}
	if c.Locks.DefaultTTL < c.Locks.MinTTL || c.Locks.DefaultTTL > c.Locks.MaxTTL {
		bad("locks.default_ttl must be between locks.min_ttl and locks.max_ttl")
	}
	if c.Nodes.Prefix == "" {
		bad("nodes.prefix is required")
	}
	if c.Nodes.TTL < time.Second {
		bad("nodes.ttl must be at least 1s")
	}
	if c.Nodes.Quarantine < c.Nodes.TTL {
		bad("nodes.quarantine must be at least nodes.ttl")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout must be positive")
	}
	errs = append(errs, c.Auth.validate()...)
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", config.ErrInvalid, errors.Join(errs...))
	}
	return nil
}

func (a Auth) validate() []error {
	var errs []error
	seen := map[string]string{}
	check := func(token, name string) {
		switch {
		case strings.HasPrefix(token, "sha256:"):
			if h := strings.TrimPrefix(token, "sha256:"); len(h) != 64 || strings.Trim(strings.ToLower(h), "0123456789abcdef") != "" {
				errs = append(errs, fmt.Errorf("%s: a sha256: token needs 64 hex digits", name))
			}
		case len(token) < MinTokenLen:
			errs = append(errs, fmt.Errorf("%s must be at least %d characters", name, MinTokenLen))
		}
		if prev, dup := seen[token]; dup {
			errs = append(errs, fmt.Errorf("%s repeats the token of %s", name, prev))
		}
		seen[token] = name
	}
	if a.AdminToken != "" {
		check(a.AdminToken, "auth.admin_token")
	}
	for i, t := range a.ServiceTokens {
		check(t, fmt.Sprintf("auth.service_tokens[%d]", i))
	}
	for t, clinic := range a.ClinicTokens {
		name := fmt.Sprintf("auth.clinic_tokens (clinic %q)", clinic)
		check(t, name)
		if id, err := ids.Parse(clinic); err != nil || id <= 0 {
			errs = append(errs, fmt.Errorf("%s: clinic must be a positive decimal id", name))
		}
	}
	return errs
}

// Empty reports whether no token at all is configured.
func (a Auth) Empty() bool {
	return a.AdminToken == "" && len(a.ServiceTokens) == 0 && len(a.ClinicTokens) == 0
}
