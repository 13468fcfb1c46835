// Package config is sc-cloud's configuration: defaults, then a YAML file,
// then SC_CLOUD_* environment variables, then flags; validated before start.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/mfa"
	"github.com/scsync/scsync/cloud-server/internal/retention"
	"github.com/scsync/scsync/shared/config"
	"github.com/scsync/scsync/shared/redisx"
	"github.com/scsync/scsync/shared/tlsx"
	"github.com/scsync/scsync/shared/wire"
)

// EnvPrefix prefixes every environment override (SC_CLOUD_POSTGRES_URL …).
const EnvPrefix = "SC_CLOUD"

// Config of one sc-cloud node.
type Config struct {
	Listen string `yaml:"listen"`
	// TLS: the listener serves HTTPS with cert_file and key_file; ca_file
	// is trusted (besides the system's roots) on every outgoing link:
	// Redis (redis.tls), the broker (amqps://), S3, lockd.
	TLS struct {
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
		CAFile   string `yaml:"ca_file"`
	} `yaml:"tls"`
	// RequireTLS refuses to start with any plaintext listener or link
	// (PostgreSQL needs sslmode=require, verify-ca or verify-full).
	RequireTLS bool   `yaml:"require_tls"`
	NodeName   string `yaml:"node_name"`
	Postgres   struct {
		URL string `yaml:"url"`
	} `yaml:"postgres"`
	AMQP struct {
		URL      string `yaml:"url"`
		Prefetch int    `yaml:"prefetch"`
		// UpShards is the number of up shard queues (scsync.up.shard.<k>)
		// clinics' changes are routed to, each consumed by one node at a
		// time. Every node of a deployment must use the same number;
		// changing it needs a drain (docs/cloud-ops.md).
		UpShards int `yaml:"up_shards"`
		// AcceptBatch is how many up messages of a shard a node accepts
		// in one PostgreSQL transaction (and settles with one ack); 1
		// accepts each alone. The shard's prefetch is twice this.
		AcceptBatch int `yaml:"accept_batch"`
		// ManagementURL (RabbitMQ's HTTP management API) with
		// ManagementUser/ManagementPassword turns on per-clinic broker
		// identities: enrollment creates each clinic's user, permissions
		// and queues (internal/brokeradmin). Empty: clinics share a login
		// given to them by hand (development and migration only).
		ManagementURL      string `yaml:"management_url"`
		ManagementUser     string `yaml:"management_user"`
		ManagementPassword string `yaml:"management_password"`
		// ClinicURL is the AMQP URL clinics dial, without credentials
		// (default: url without its credentials).
		ClinicURL string `yaml:"clinic_url"`
		// UserPrefix starts every clinic's broker user name, for brokers
		// shared by several deployments.
		UserPrefix string `yaml:"user_prefix"`
	} `yaml:"amqp"`
	Redis struct {
		Addr     string        `yaml:"addr"`
		Password string        `yaml:"password"`
		Prefix   string        `yaml:"prefix"`
		LeaseTTL time.Duration `yaml:"lease_ttl"`
		// Sentinel, when its addrs are set, finds the master through Redis
		// Sentinel (addr is then unused), and a new node id lease waits
		// until one replica has it: docs/cloud-ops.md.
		Sentinel redisx.Sentinel `yaml:"sentinel"`
		// TLS connects to Redis over TLS (trusting tls.ca_file).
		TLS bool `yaml:"tls"`
	} `yaml:"redis"`
	S3 struct {
		Endpoint  string `yaml:"endpoint"`
		Region    string `yaml:"region"`
		Bucket    string `yaml:"bucket"`
		AccessKey string `yaml:"access_key"`
		SecretKey string `yaml:"secret_key"`
		PathStyle bool   `yaml:"path_style"`
	} `yaml:"s3"`
	Auth struct {
		AdminToken string `yaml:"admin_token"`
		// SessionIdle ends a person's session unused this long (automatic
		// logoff); SessionMax ends it however active.
		SessionIdle time.Duration `yaml:"session_idle"`
		SessionMax  time.Duration `yaml:"session_max"`
		// TOTPKey seals people's TOTP secrets (base64 of 32 random bytes,
		// the same on every node; `openssl rand -base64 32`). Empty: no
		// second factor can be enrolled (docs/security.md).
		TOTPKey string `yaml:"totp_key"`
		// RequireTOTP makes a second factor mandatory for every person's
		// cloud login: a person without one must enrol it before anything
		// else.
		RequireTOTP bool `yaml:"require_totp"`
	} `yaml:"auth"`
	// Files rules image files in S3 (docs/files.md); the bucket is s3.bucket.
	Files files.Config `yaml:"files"`
	// Backups rules the clinics' database snapshots in S3 (M27).
	Backups struct {
		// Keep is how many snapshots per clinic keep their object.
		Keep int `yaml:"keep"`
	} `yaml:"backups"`
	// Retention is the job applying each clinic's old-data policy
	// (docs/retention.md); the cold bucket is files.cold_bucket.
	Retention retention.Config `yaml:"retention"`
	// Lockd is the lock service (a service token). Without a URL every edit
	// is offered as "edit anyway" (no lock, conflict risk).
	Lockd struct {
		URL   string `yaml:"url"`
		Token string `yaml:"token"`
		// ClinicURL is the lockd URL clinics dial, handed out at
		// enrollment with the clinic's lockd token (default: url).
		ClinicURL string `yaml:"clinic_url"`
	} `yaml:"lockd"`
	// Edit tunes edit sessions (M12, M15).
	Edit struct {
		LockTTL   time.Duration `yaml:"lock_ttl"`
		IdleWarn  time.Duration `yaml:"idle_warn"`
		IdleGrace time.Duration `yaml:"idle_grace"`
	} `yaml:"edit"`
	Log struct {
		Format string `yaml:"format"`
		Level  string `yaml:"level"`
	} `yaml:"log"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Default returns the built-in defaults (the development stack on loopback).
func Default() Config {
	var c Config
	c.Listen = "127.0.0.1:8081"
	c.Auth.SessionIdle = 15 * time.Minute
	c.Auth.SessionMax = 12 * time.Hour
	c.Postgres.URL = "postgres://scsync:scsync@127.0.0.1:5432/scsync?sslmode=disable"
	c.AMQP.URL = "amqp://guest:guest@127.0.0.1:5672/"
	c.AMQP.Prefetch = 64
	c.AMQP.UpShards = wire.DefaultUpShards
	c.AMQP.AcceptBatch = 256
	c.Redis.Addr = "127.0.0.1:6379"
	c.Redis.Prefix = "scsync:"
	c.Redis.LeaseTTL = 30 * time.Second
	c.S3.Endpoint = "http://127.0.0.1:9000"
	c.S3.Region = "us-east-1"
	c.S3.Bucket = "scsync"
	c.S3.PathStyle = true
	c.Files = files.DefaultConfig()
	c.Backups.Keep = 14
	c.Retention = retention.DefaultConfig()
	c.Edit.LockTTL = time.Minute
	c.Edit.IdleWarn = 5 * time.Minute
	c.Edit.IdleGrace = time.Minute
	c.Log.Format = "json"
	c.Log.Level = "info"
	c.ShutdownTimeout = 20 * time.Second
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

// ServerTLS is the listener's TLS setting.
func (c Config) ServerTLS() tlsx.Server {
	return tlsx.Server{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile}
}

// ClientTLS is the outgoing links' TLS setting.
func (c Config) ClientTLS() tlsx.Client { return tlsx.Client{CAFile: c.TLS.CAFile} }

// Validate names the first setting that is wrong.
func (c Config) Validate() error {
	var errs []error
	need := func(v, name string) {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s is required", name))
		}
	}
	need(c.Listen, "listen")
	need(c.Postgres.URL, "postgres.url")
	need(c.AMQP.URL, "amqp.url")
	if !c.Redis.Sentinel.Enabled() {
		need(c.Redis.Addr, "redis.addr")
	}
	if err := c.Redis.Sentinel.Validate("redis.sentinel"); err != nil {
		errs = append(errs, err)
	}
	need(c.S3.Bucket, "s3.bucket")
	if c.Auth.SessionIdle < time.Second || c.Auth.SessionMax < c.Auth.SessionIdle {
		errs = append(errs, errors.New("auth.session_idle must be at least 1s and auth.session_max at least auth.session_idle"))
	}
	for _, u := range []struct {
		setting, raw string
		schemes      []string
	}{
		{"postgres.url", c.Postgres.URL, []string{"postgres", "postgresql"}},
		{"amqp.url", c.AMQP.URL, []string{"amqp", "amqps"}},
		{"s3.endpoint", c.S3.Endpoint, []string{"https", "http"}},
		{"lockd.url", c.Lockd.URL, []string{"https", "http"}},
	} {
		if err := config.CheckURL(u.setting, u.raw, u.schemes...); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Auth.AdminToken != "" && len(c.Auth.AdminToken) < 16 {
		errs = append(errs, errors.New("auth.admin_token must be at least 16 characters"))
	}
	if c.AMQP.UpShards < 1 || c.AMQP.UpShards > wire.MaxUpShards {
		errs = append(errs, fmt.Errorf("amqp.up_shards must be 1..%d", wire.MaxUpShards))
	}
	if _, err := mfa.ParseKey(c.Auth.TOTPKey); err != nil {
		errs = append(errs, err)
	}
	if c.Auth.RequireTOTP && strings.TrimSpace(c.Auth.TOTPKey) == "" {
		errs = append(errs, errors.New("auth.require_totp needs auth.totp_key"))
	}
	if c.AMQP.Prefetch < 1 || c.AMQP.Prefetch > 10000 {
		errs = append(errs, errors.New("amqp.prefetch must be 1..10000"))
	}
	if c.AMQP.AcceptBatch < 1 || c.AMQP.AcceptBatch > 10000 {
		errs = append(errs, errors.New("amqp.accept_batch must be 1..10000"))
	}
	if c.Redis.LeaseTTL < 3*time.Second {
		errs = append(errs, errors.New("redis.lease_ttl must be at least 3s"))
	}
	fc := c.Files
	fc.Bucket = c.S3.Bucket
	if err := fc.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("files: %w", err))
	}
	if c.Backups.Keep < 1 || c.Backups.Keep > 1000 {
		errs = append(errs, errors.New("backups.keep must be 1..1000"))
	}
	if err := c.Retention.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Edit.LockTTL < 2*time.Second {
		errs = append(errs, errors.New("edit.lock_ttl must be at least 2s"))
	}
	if c.Edit.IdleWarn < time.Second || c.Edit.IdleGrace < time.Second {
		errs = append(errs, errors.New("edit.idle_warn and edit.idle_grace must be at least 1s"))
	}
	if c.AMQP.ManagementURL != "" && (c.AMQP.ManagementUser == "" || c.AMQP.ManagementPassword == "") {
		errs = append(errs, errors.New("amqp.management_user and amqp.management_password are required with amqp.management_url"))
	}
	if c.Lockd.URL != "" && strings.TrimSpace(c.Lockd.Token) == "" {
		errs = append(errs, errors.New("lockd.token is required with lockd.url"))
	}
	if err := c.ServerTLS().Validate("tls"); err != nil {
		errs = append(errs, err)
	}
	if c.RequireTLS {
		var req tlsx.Require
		req.Listener("tls", c.ServerTLS())
		req.Link("postgres.url", c.Postgres.URL)
		req.Link("amqp.url", c.AMQP.URL)
		// The management API carries its password and every clinic's new
		// broker secret; the clinic URLs are what enrollment hands out.
		req.Link("amqp.management_url", c.AMQP.ManagementURL)
		req.Link("amqp.clinic_url", c.AMQP.ClinicURL)
		req.Flag("redis.tls", c.Redis.TLS)
		req.Link("s3.endpoint", c.S3.Endpoint) // empty: AWS's https endpoint
		req.Link("files.public_endpoint", c.Files.PublicEndpoint)
		req.Link("lockd.url", c.Lockd.URL)
		req.Link("lockd.clinic_url", c.Lockd.ClinicURL)
		if err := req.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", config.ErrInvalid, errors.Join(errs...))
	}
	return nil
}
