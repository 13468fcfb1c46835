// Package config is lockd's configuration: defaults, then a YAML file, then
// LOCKD_* environment variables; validated before start.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/scsync/scsync/shared/config"
)

// EnvPrefix prefixes every environment override (LOCKD_REDIS_ADDR …).
const EnvPrefix = "LOCKD"

// Config of one lockd replica.
type Config struct {
	Listen string `yaml:"listen"`
	Redis  struct {
		Addr     string `yaml:"addr"`
		Password string `yaml:"password"`
		Prefix   string `yaml:"prefix"`
	} `yaml:"redis"`
	Log struct {
		Format string `yaml:"format"`
		Level  string `yaml:"level"`
	} `yaml:"log"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Default returns the built-in defaults.
func Default() Config {
	var c Config
	c.Listen = "127.0.0.1:8090"
	c.Redis.Addr = "127.0.0.1:6379"
	c.Redis.Prefix = "scsync:lock:"
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
	var errs []error
	if strings.TrimSpace(c.Listen) == "" {
		errs = append(errs, errors.New("listen is required"))
	}
	if strings.TrimSpace(c.Redis.Addr) == "" {
		errs = append(errs, errors.New("redis.addr is required"))
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("%w: %w", config.ErrInvalid, errors.Join(errs...))
	}
	return c, nil
}
