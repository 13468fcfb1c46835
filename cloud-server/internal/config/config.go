// Package config is sc-cloud's configuration: defaults, then a YAML file,
// then SC_CLOUD_* environment variables, then flags; validated before start.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/retention"
	"github.com/scsync/scsync/shared/config"
)

// EnvPrefix prefixes every environment override (SC_CLOUD_POSTGRES_URL …).
const EnvPrefix = "SC_CLOUD"

// Config of one sc-cloud node.
type Config struct {
	Listen   string `yaml:"listen"`
	NodeName string `yaml:"node_name"`
	Postgres struct {
		URL string `yaml:"url"`
	} `yaml:"postgres"`
	AMQP struct {
		URL      string `yaml:"url"`
		Prefetch int    `yaml:"prefetch"`
	} `yaml:"amqp"`
	Redis struct {
		Addr     string        `yaml:"addr"`
		Password string        `yaml:"password"`
		Prefix   string        `yaml:"prefix"`
		LeaseTTL time.Duration `yaml:"lease_ttl"`
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
	c.Postgres.URL = "postgres://scsync:scsync@127.0.0.1:5432/scsync?sslmode=disable"
	c.AMQP.URL = "amqp://guest:guest@127.0.0.1:5672/"
	c.AMQP.Prefetch = 64
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
	need(c.Redis.Addr, "redis.addr")
	need(c.S3.Bucket, "s3.bucket")
	if c.Auth.AdminToken != "" && len(c.Auth.AdminToken) < 16 {
		errs = append(errs, errors.New("auth.admin_token must be at least 16 characters"))
	}
	if c.AMQP.Prefetch < 1 || c.AMQP.Prefetch > 10000 {
		errs = append(errs, errors.New("amqp.prefetch must be 1..10000"))
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
	if c.Lockd.URL != "" && strings.TrimSpace(c.Lockd.Token) == "" {
		errs = append(errs, errors.New("lockd.token is required with lockd.url"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", config.ErrInvalid, errors.Join(errs...))
	}
	return nil
}
