package amqpx

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net/url"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Defaults applied by New for zero Config fields.
const (
	DefaultPrefetch       = 64
	DefaultHeartbeat      = 10 * time.Second
	DefaultReconnectMin   = 200 * time.Millisecond
	DefaultReconnectMax   = 30 * time.Second
	DefaultConfirmTimeout = 30 * time.Second
)

// Config configures a Client. Zero values take the defaults above.
type Config struct {
	URL            string        // amqp://user:pass@host:port/vhost (the password is never logged)
	ConnectionName string        // connection_name client property, shown in the management UI
	Prefetch       int           // per consumer channel; default 64
	Heartbeat      time.Duration // default 10s
	ReconnectMin   time.Duration // first reconnect delay bound; default 200ms (full jitter, doubling)
	ReconnectMax   time.Duration // largest reconnect delay bound; default 30s
	ConfirmTimeout time.Duration // max wait for a publisher confirm; default 30s
	// TLS is used for amqps:// URLs (nil: the system's roots); tlsx.Client
	// builds one trusting a private CA.
	TLS *tls.Config
	// OnSubscribe, when set, is called each time a consumer's subscription
	// to queue is established: at start and again after every reconnect. A
	// consumer of transient messages, which a broker restart loses, re-reads
	// its source of truth there.
	OnSubscribe func(queue string)
}

// withDefaults returns cfg with zero fields set to their defaults, or an
// error naming the first invalid setting.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.URL == "" {
		return cfg, fmt.Errorf("URL is empty: %w", ErrInvalidConfig)
	}
	if _, err := amqp.ParseURI(cfg.URL); err != nil {
		// The parse error may quote the URL; never echo a password.
		return cfg, fmt.Errorf("URL %s does not parse as an AMQP URI: %w", redactURL(cfg.URL), ErrInvalidConfig)
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = DefaultPrefetch
	}
	if cfg.Prefetch < 0 || cfg.Prefetch > 65535 {
		return cfg, fmt.Errorf("prefetch = %d, want 1..65535: %w", cfg.Prefetch, ErrInvalidConfig)
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Heartbeat", &cfg.Heartbeat, DefaultHeartbeat},
		{"ReconnectMin", &cfg.ReconnectMin, DefaultReconnectMin},
		{"ReconnectMax", &cfg.ReconnectMax, DefaultReconnectMax},
		{"ConfirmTimeout", &cfg.ConfirmTimeout, DefaultConfirmTimeout},
	}
	for _, d := range durations {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			return cfg, fmt.Errorf("%s = %s, want > 0: %w", d.name, *d.v, ErrInvalidConfig)
		}
	}
	if cfg.Heartbeat < time.Second {
		// amqp091 treats < 1s as "use the server's value", which hides typos.
		return cfg, fmt.Errorf("heartbeat = %s, want >= 1s: %w", cfg.Heartbeat, ErrInvalidConfig)
	}
	if cfg.ReconnectMin > cfg.ReconnectMax {
		return cfg, fmt.Errorf("ReconnectMin = %s is above ReconnectMax = %s: %w", cfg.ReconnectMin, cfg.ReconnectMax, ErrInvalidConfig)
	}
	return cfg, nil
}

// redactURL returns u with any password replaced, for logs and errors.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "<unparseable url>"
	}
	return p.Redacted()
}

// backoff returns the delay before reconnect attempt n (0-based): uniform in
// [0, min(max, min·2ⁿ)] ("full jitter"), so many clients that lost the same
// broker do not come back in lockstep.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	ceil := min(lo, hi)
	for range attempt {
		if ceil > hi/2 {
			ceil = hi
			break
		}
		ceil *= 2
	}
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}
