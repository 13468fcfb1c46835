// Package config is sc-local's configuration: defaults, then a YAML file,
// then SC_LOCAL_* environment variables, then flags; validated before start.
package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/config"
	"github.com/scsync/scsync/shared/ids"
)

// EnvPrefix prefixes every environment override (SC_LOCAL_AMQP_URL …).
const EnvPrefix = "SC_LOCAL"

// Config of the clinic server.
type Config struct {
	Listen  string `yaml:"listen"`
	DataDir string `yaml:"data_dir"`
	Clinic  struct {
		ID   int64 `yaml:"id"`
		Node int64 `yaml:"node"`
	} `yaml:"clinic"`
	Cloud struct {
		URL       string        `yaml:"url"`
		Token     string        `yaml:"token"`
		PullEvery time.Duration `yaml:"pull_every"`
	} `yaml:"cloud"`
	AMQP struct {
		URL      string `yaml:"url"`
		Prefetch int    `yaml:"prefetch"`
	} `yaml:"amqp"`
	// Lockd is the cloud's lock service. Without a URL every edit is offered
	// as "edit anyway" (no lock, conflict risk).
	Lockd struct {
		URL   string `yaml:"url"`
		Token string `yaml:"token"`
	} `yaml:"lockd"`
	// Scope, when set, is the sync scope applied at start (M4); it can also
	// be changed through the API (PUT /v1/scope), which lasts until the next
	// start with a scope here.
	Scope *store.Scope `yaml:"scope"`
	// Files tunes image file transfers (docs/files.md).
	Files struct {
		// BytesPerSecond caps the bandwidth of all transfers (0: none);
		// clinic uplinks are often small and shared.
		BytesPerSecond int64 `yaml:"bytes_per_second"`
		// Concurrency is how many files move at once.
		Concurrency int `yaml:"concurrency"`
	} `yaml:"files"`
	// Backup takes a snapshot of the database to S3 on a schedule (M27;
	// 0 turns the schedule off; POST /v1/backup or `sc-local backup` takes
	// one at any time). `sc-local restore` brings it back on a new machine.
	Backup struct {
		Every time.Duration `yaml:"every"`
	} `yaml:"backup"`
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

// Default returns the built-in defaults.
func Default() Config {
	var c Config
	c.Listen = "127.0.0.1:8080"
	c.DataDir = "./scsync-data"
	c.Cloud.PullEvery = 30 * time.Second
	c.AMQP.URL = "amqp://guest:guest@127.0.0.1:5672/"
	c.AMQP.Prefetch = 64
	c.Files.Concurrency = 2
	c.Backup.Every = 24 * time.Hour
	c.Edit.LockTTL = time.Minute
	c.Edit.IdleWarn = 5 * time.Minute
	c.Edit.IdleGrace = time.Minute
	c.Log.Format = "text"
	c.Log.Level = "info"
	c.ShutdownTimeout = 15 * time.Second
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

// DBPath is the SQLite file.
func (c Config) DBPath() string { return filepath.Join(c.DataDir, "scsync.db") }

// IDStatePath keeps the id generator's clock high-water mark.
func (c Config) IDStatePath() string { return filepath.Join(c.DataDir, "ids.state") }

// Validate names every setting that is wrong.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Listen) == "" {
		errs = append(errs, errors.New("listen is required"))
	}
	if strings.TrimSpace(c.DataDir) == "" {
		errs = append(errs, errors.New("data_dir is required"))
	}
	if c.Clinic.ID <= 0 {
		errs = append(errs, errors.New("clinic.id is required (from enrollment with the cloud)"))
	}
	if !ids.ValidClinicNode(c.Clinic.Node) {
		errs = append(errs, fmt.Errorf("clinic.node must be %d..%d (from enrollment with the cloud)", ids.MinClinicNode, ids.MaxClinicNode))
	}
	if strings.TrimSpace(c.Cloud.URL) == "" {
		errs = append(errs, errors.New("cloud.url is required"))
	}
	if strings.TrimSpace(c.Cloud.Token) == "" {
		errs = append(errs, errors.New("cloud.token is required"))
	}
	if c.Cloud.PullEvery < time.Second {
		errs = append(errs, errors.New("cloud.pull_every must be at least 1s"))
	}
	if strings.TrimSpace(c.AMQP.URL) == "" {
		errs = append(errs, errors.New("amqp.url is required"))
	}
	if c.AMQP.Prefetch < 1 || c.AMQP.Prefetch > 10000 {
		errs = append(errs, errors.New("amqp.prefetch must be 1..10000"))
	}
	if c.Scope != nil {
		if err := c.Scope.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Files.BytesPerSecond < 0 || c.Files.Concurrency < 1 || c.Files.Concurrency > 64 {
		errs = append(errs, errors.New("files.bytes_per_second must be ≥ 0 and files.concurrency 1..64"))
	}
	if c.Backup.Every != 0 && c.Backup.Every < time.Minute {
		errs = append(errs, errors.New("backup.every must be 0 (off) or at least 1m"))
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
