// Package config is sc-local's configuration: defaults, then a YAML file,
// then SC_LOCAL_* environment variables, then flags; validated before start.
package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/config"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/tlsx"
)

// EnvPrefix prefixes every environment override (SC_LOCAL_AMQP_URL …).
const EnvPrefix = "SC_LOCAL"

// Config of the clinic server.
type Config struct {
	Listen string `yaml:"listen"`
	// TLS: the listener serves HTTPS with cert_file and key_file; ca_file
	// is trusted (besides the system's roots) on every outgoing link:
	// cloud, lockd, broker (amqps://), S3.
	TLS struct {
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
		CAFile   string `yaml:"ca_file"`
	} `yaml:"tls"`
	// RequireTLS refuses to start with any plaintext listener or link.
	RequireTLS bool   `yaml:"require_tls"`
	DataDir    string `yaml:"data_dir"`
	Clinic     struct {
		ID   int64 `yaml:"id"`
		Node int64 `yaml:"node"`
		// Name is the clinic's name, shown in the viewer's title (written
		// by enrollment; optional).
		Name string `yaml:"name"`
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
		// BackfillWindow, e.g. "22:00-06:00" (local time), is when files of
		// backfilled records (history) may be uploaded; empty: any time.
		// Files of live changes always go at once.
		BackfillWindow string `yaml:"backfill_window"`
		// ImportDirs are the only directories POST /v1/files may read a
		// file from (symbolic links resolved; docs/files.md). Empty: the
		// data directory's import/ folder, created at start.
		ImportDirs []string `yaml:"import_dirs"`
	} `yaml:"files"`
	// Backup takes a snapshot of the database to S3 on a schedule (M27;
	// 0 turns the schedule off; POST /v1/backup or `sc-local backup` takes
	// one at any time). `sc-local restore` brings it back on a new machine.
	Backup struct {
		Every time.Duration `yaml:"every"`
		// IdentityFile is the backup recovery key (an age identity file;
		// default <data_dir>/backup-identity.txt, generated at first start
		// when missing). Backups are encrypted to it; restore needs it, so
		// the clinic's IT keeps a copy off the machine (docs/backup.md).
		IdentityFile string `yaml:"identity_file"`
		// Recipients are further age public keys (age1…) every backup is
		// encrypted to: IT's offline key, the operator's escrow key.
		Recipients []string `yaml:"recipients"`
	} `yaml:"backup"`
	// Verify compares the clinic with the cloud on a schedule (anti-entropy,
	// docs/verify.md; 0 turns the schedule off; `sc-local verify` runs it at
	// any time) and, with Repair, repairs what differs.
	Verify struct {
		Every  time.Duration `yaml:"every"`
		Repair bool          `yaml:"repair"`
	} `yaml:"verify"`
	// Edit tunes edit sessions (M12, M15).
	Edit struct {
		LockTTL   time.Duration `yaml:"lock_ttl"`
		IdleWarn  time.Duration `yaml:"idle_warn"`
		IdleGrace time.Duration `yaml:"idle_grace"`
	} `yaml:"edit"`
	// Auth: persons log in and get sessions that end when idle (automatic
	// logoff); the API token lets the CLI on this machine act as an admin.
	Auth struct {
		// APIToken, when empty, is made at first start and kept in
		// <data_dir>/api-token (mode 0600), where the CLI reads it.
		APIToken    string        `yaml:"api_token"`
		SessionIdle time.Duration `yaml:"session_idle"`
		SessionMax  time.Duration `yaml:"session_max"`
	} `yaml:"auth"`
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
	if runtime.GOOS == "windows" {
		// A Windows service's working directory is System32.
		c.DataDir = DefaultPaths(runtime.GOOS, os.Getenv).DataDir
	}
	c.Cloud.PullEvery = 30 * time.Second
	c.AMQP.URL = "amqp://guest:guest@127.0.0.1:5672/"
	c.AMQP.Prefetch = 64
	c.Files.Concurrency = 2
	c.Backup.Every = 24 * time.Hour
	c.Verify.Every = 6 * time.Hour
	c.Verify.Repair = true
	c.Edit.LockTTL = time.Minute
	c.Edit.IdleWarn = 5 * time.Minute
	c.Edit.IdleGrace = time.Minute
	c.Auth.SessionIdle = 15 * time.Minute
	c.Auth.SessionMax = 12 * time.Hour
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

// ServerTLS is the listener's TLS setting.
func (c Config) ServerTLS() tlsx.Server {
	return tlsx.Server{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile}
}

// LocalURL is where the commands on this machine reach the running server:
// https when the listener serves TLS, and a loopback address for a listener
// on every interface ("", 0.0.0.0, ::).
func (c Config) LocalURL() string {
	scheme := "http"
	if c.ServerTLS().Enabled() {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return scheme + "://" + c.Listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// ClientTLS is the outgoing links' TLS setting.
func (c Config) ClientTLS() tlsx.Client { return tlsx.Client{CAFile: c.TLS.CAFile} }

// ImportDirs are the directories files may be imported from.
func (c Config) ImportDirs() []string {
	if len(c.Files.ImportDirs) > 0 {
		return c.Files.ImportDirs
	}
	return []string{c.DefaultImportDir()}
}

// DefaultImportDir is the import directory when none is configured.
func (c Config) DefaultImportDir() string { return filepath.Join(c.DataDir, "import") }

// BackupIdentityFile is the backup recovery key's path.
func (c Config) BackupIdentityFile() string {
	if c.Backup.IdentityFile != "" {
		return c.Backup.IdentityFile
	}
	return filepath.Join(c.DataDir, "backup-identity.txt")
}

// IDStatePath keeps the id generator's clock high-water mark.
func (c Config) IDStatePath() string { return filepath.Join(c.DataDir, "ids.state") }

// APITokenPath keeps the machine's API token when auth.api_token is empty.
func (c Config) APITokenPath() string { return filepath.Join(c.DataDir, "api-token") }

// APIToken is the machine's API token: auth.api_token, or the one kept in
// the data directory (made there, mode 0600, when create is set and there
// is none).
func (c Config) APIToken(create bool) (string, error) {
	if c.Auth.APIToken != "" {
		return c.Auth.APIToken, nil
	}
	b, err := os.ReadFile(c.APITokenPath())
	if err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return strings.TrimSpace(string(b)), nil
	}
	if !create {
		if err == nil {
			err = errors.New("the file is empty")
		}
		return "", fmt.Errorf("api token %s: %w", c.APITokenPath(), err)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(buf)
	if err := os.WriteFile(c.APITokenPath(), []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	return tok, nil
}

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
	for _, d := range c.Files.ImportDirs {
		if strings.TrimSpace(d) == "" || !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("files.import_dirs: %q must be an absolute directory", d))
		}
	}
	if _, err := ParseWindow(c.Files.BackfillWindow); err != nil {
		errs = append(errs, fmt.Errorf("files.backfill_window: %w", err))
	}
	if c.Verify.Every != 0 && c.Verify.Every < time.Minute {
		errs = append(errs, errors.New("verify.every must be 0 (off) or at least 1m"))
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
	if c.Auth.SessionIdle < time.Second || c.Auth.SessionMax < c.Auth.SessionIdle {
		errs = append(errs, errors.New("auth.session_idle must be at least 1s and auth.session_max at least auth.session_idle"))
	}
	if c.Auth.APIToken != "" && len(c.Auth.APIToken) < 16 {
		errs = append(errs, errors.New("auth.api_token must have at least 16 characters"))
	}
	if err := c.ServerTLS().Validate("tls"); err != nil {
		errs = append(errs, err)
	}
	if c.RequireTLS {
		var req tlsx.Require
		req.Listener("tls", c.ServerTLS())
		req.Link("cloud.url", c.Cloud.URL)
		req.Link("amqp.url", c.AMQP.URL)
		req.Link("lockd.url", c.Lockd.URL)
		if err := req.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Lockd.URL != "" && strings.TrimSpace(c.Lockd.Token) == "" {
		errs = append(errs, errors.New("lockd.token is required with lockd.url"))
	}
	// URLs are checked for a scheme and a host: "cloud.example.com" would
	// pass as a relative URL and then fail at every request, forever.
	for _, u := range []struct {
		setting, raw string
		schemes      []string
	}{
		{"cloud.url", c.Cloud.URL, []string{"https", "http"}},
		{"amqp.url", c.AMQP.URL, []string{"amqp", "amqps"}},
		{"lockd.url", c.Lockd.URL, []string{"https", "http"}},
	} {
		if err := config.CheckURL(u.setting, u.raw, u.schemes...); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", config.ErrInvalid, errors.Join(errs...))
	}
	return nil
}
