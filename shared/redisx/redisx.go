// Package redisx connects sc-cloud and lockd to Redis: one server, or a
// master found through Redis Sentinel (high availability, docs/cloud-ops.md).
package redisx

import (
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Sentinel names the Sentinels that watch the Redis master. With Addrs set,
// the client asks them for the current master (and again after a failover)
// instead of dialling redis.addr.
type Sentinel struct {
	// Addrs are the Sentinels' host:port (three or more, on separate hosts).
	Addrs []string `yaml:"addrs"`
	// Master is the name the Sentinels monitor the master under.
	Master string `yaml:"master"`
	// Username and Password authenticate to the Sentinels themselves
	// (sentinel requirepass); the master's password is redis.password.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// Enabled reports whether Sentinel is configured.
func (s Sentinel) Enabled() bool { return len(s.Addrs) > 0 }

// Validate names what is wrong, under the setting name prefix (e.g. "redis.sentinel").
func (s Sentinel) Validate(prefix string) error {
	if !s.Enabled() {
		if s.Master != "" {
			return fmt.Errorf("%s.master is set without %s.addrs", prefix, prefix)
		}
		return nil
	}
	var errs []error
	if strings.TrimSpace(s.Master) == "" {
		errs = append(errs, fmt.Errorf("%s.master is required with %s.addrs", prefix, prefix))
	}
	for _, a := range s.Addrs {
		if !strings.Contains(strings.TrimSpace(a), ":") {
			errs = append(errs, fmt.Errorf("%s.addrs: %q is not host:port", prefix, a))
		}
	}
	return errors.Join(errs...)
}

// NewClient returns a client for opts (a single server at opts.Addr), or,
// with Sentinel enabled, a failover client with the same credentials,
// timeouts, retries and TLS that always talks to the current master.
// Reads go to the master too: lockd and the node leases need their own
// writes back.
func NewClient(opts *redis.Options, s Sentinel) *redis.Client {
	if !s.Enabled() {
		return redis.NewClient(opts)
	}
	addrs := make([]string, 0, len(s.Addrs))
	for _, a := range s.Addrs {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            s.Master,
		SentinelAddrs:         addrs,
		SentinelUsername:      s.Username,
		SentinelPassword:      s.Password,
		Username:              opts.Username,
		Password:              opts.Password,
		DB:                    opts.DB,
		MaxRetries:            opts.MaxRetries,
		DialTimeout:           opts.DialTimeout,
		DialerRetries:         opts.DialerRetries,
		ReadTimeout:           opts.ReadTimeout,
		WriteTimeout:          opts.WriteTimeout,
		ContextTimeoutEnabled: opts.ContextTimeoutEnabled,
		PoolSize:              opts.PoolSize,
		PoolTimeout:           opts.PoolTimeout,
		TLSConfig:             opts.TLSConfig,
	})
}
