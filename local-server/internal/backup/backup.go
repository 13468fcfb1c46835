// Package backup backs the clinic database up to S3 and restores a replaced
// machine from it (M27). A backup is a consistent SQLite snapshot (VACUUM
// INTO), gzipped and encrypted on the clinic with age (keys.go), sent straight to S3 through a presigned PUT whose length
// and SHA-256 are signed; the cloud verifies and lists it. A restore fetches
// the newest snapshot the same way; sc-local then catches up from the
// cloud by cloud_seq and downloads the files the machine no longer has.
package backup

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
)

// Cloud is the part of the cloud API backups use.
type Cloud interface {
	BeginBackup(ctx context.Context, b filekey.BackupBegin) (filekey.BackupUpload, error)
	CompleteBackup(ctx context.Context, id ids.ID) (filekey.Backup, error)
	BackupDownload(ctx context.Context, id string) (filekey.BackupDownload, error)
}

// Status is what GET /v1/backup shows.
type Status struct {
	// Last is the newest backup this machine stored in the cloud.
	Last *filekey.Backup `json:"last,omitempty"`
	// LastError is why the last attempt failed ("" when it did not).
	LastError   string     `json:"last_error,omitempty"`
	LastAttempt *time.Time `json:"last_attempt,omitempty"`
	// Every is the schedule ("" when scheduled backups are off); NextAt is
	// when the next one runs.
	Every   string     `json:"every,omitempty"`
	NextAt  *time.Time `json:"next_at,omitempty"`
	Running bool       `json:"running"`
}

// Backuper takes backups on a schedule and on request.
type Backuper struct {
	st    *store.Store
	cloud Cloud
	dir   string // data dir: temporary files and the record of the last backup
	every time.Duration
	keys  Keys
	http  *http.Client
	log   *slog.Logger

	run sync.Mutex // one backup at a time
	mu  sync.Mutex
	s   Status
}

// New returns a Backuper; every 0 turns scheduled backups off (POST
// /v1/backup still takes one).
func New(st *store.Store, cloud Cloud, dataDir string, every time.Duration, keys Keys, log *slog.Logger) *Backuper {
	b := &Backuper{st: st, cloud: cloud, dir: dataDir, every: every, keys: keys, log: log,
		http: &http.Client{Timeout: 6 * time.Hour}}
	if every > 0 {
		b.s.Every = every.String()
	}
	if last, err := readLast(b.lastPath()); err == nil {
		b.s.Last = last
	}
	return b
}

// NewHTTP is the client backups go to and come from S3 with: TLS per tls
// (nil: the system's roots), and hours for a large database.
func NewHTTP(tls *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tls.Clone()
	return &http.Client{Transport: tr, Timeout: 6 * time.Hour}
}

// WithTLS makes uploads to S3 trust tls's roots (tls.ca_file: a private CA
// of the object store).
func (b *Backuper) WithTLS(tls *tls.Config) *Backuper {
	b.http = NewHTTP(tls)
	return b
}

func (b *Backuper) lastPath() string { return filepath.Join(b.dir, "backup-last.json") }

// Status returns the backup status.
func (b *Backuper) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.s
}

// Run takes a backup whenever one is due, until ctx ends: every after the
// last stored one; a machine that never stored one does so ten minutes
// after it starts (or every, when shorter), not in the rush of its start.
func (b *Backuper) Run(ctx context.Context) error {
	if b.every <= 0 {
		return nil
	}
	first := time.Now().Add(min(b.every, 10*time.Minute))
	for {
		next := first
		b.mu.Lock()
		if b.s.Last != nil && b.s.Last.CompletedAt != nil {
			next = b.s.Last.CompletedAt.Add(b.every)
		}
		if b.s.LastError != "" && b.s.LastAttempt != nil {
			// A failed attempt is retried sooner than the schedule.
			next = b.s.LastAttempt.Add(min(b.every, 5*time.Minute))
		}
		b.s.NextAt = &next
		b.mu.Unlock()
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if _, err := b.Now(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("backup failed; will retry", "err", err)
		}
	}
}

// Now takes a backup and stores it in the cloud.
func (b *Backuper) Now(ctx context.Context) (filekey.Backup, error) {
	b.run.Lock()
	defer b.run.Unlock()
	now := time.Now().UTC()
	b.mu.Lock()
	b.s.Running, b.s.LastAttempt = true, &now
	b.mu.Unlock()
	bk, err := b.take(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.s.Running = false
	if err != nil {
		b.s.LastError = err.Error()
		return bk, err
	}
	b.s.LastError, b.s.Last = "", &bk
	if err := writeLast(b.lastPath(), bk); err != nil {
		b.log.Warn("recording the last backup failed", "err", err)
	}
	b.log.Info("backup stored in the cloud", "backup", bk.ID, "bytes", bk.Size, "records", bk.Records, "checkpoint", bk.Checkpoint)
	return bk, nil
}

func (b *Backuper) take(ctx context.Context) (filekey.Backup, error) {
	tmp, err := os.MkdirTemp(b.dir, "backup-*")
	if err != nil {
		return filekey.Backup{}, fmt.Errorf("backup: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	snap := filepath.Join(tmp, "scsync.db")
	info, err := b.st.Snapshot(ctx, snap)
	if err != nil {
		return filekey.Backup{}, err
	}
	gz := snap + ".gz.age"
	sum, size, err := b.seal(snap, gz)
	if err != nil {
		return filekey.Backup{}, err
	}
	up, err := b.cloud.BeginBackup(ctx, filekey.BackupBegin{Size: size, SHA256: sum, Checkpoint: info.Checkpoint, Records: info.Records})
	if err != nil {
		return filekey.Backup{}, fmt.Errorf("backup: begin: %w", err)
	}
	if err := b.put(ctx, up.Put, gz, size); err != nil {
		return filekey.Backup{}, err
	}
	bk, err := b.cloud.CompleteBackup(ctx, up.Backup.ID)
	if err != nil {
		return filekey.Backup{}, fmt.Errorf("backup: complete: %w", err)
	}
	return bk, nil
}

// seal gzips src, encrypts it (age) into dst and returns the SHA-256 and
// size of dst, which is what S3 stores.
func (b *Backuper) seal(src, dst string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, fmt.Errorf("backup: %w", err)
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("backup: %w", err)
	}
	defer func() { _ = out.Close() }()
	h := sha256.New()
	cw := &counter{w: io.MultiWriter(out, h)}
	pr, pw := io.Pipe()
	go func() {
		zw := gzip.NewWriter(pw)
		_, err := io.Copy(zw, in)
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	if err := b.keys.encrypt(cw, pr); err != nil {
		_ = pr.CloseWithError(err)
		return "", 0, err
	}
	if err := out.Sync(); err != nil {
		return "", 0, fmt.Errorf("backup: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

func (b *Backuper) put(ctx context.Context, p filekey.Presigned, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer func() { _ = f.Close() }()
	req, err := http.NewRequestWithContext(ctx, p.Method, p.URL, f)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	req.ContentLength = size
	p.Request(req.Header)
	resp, err := b.http.Do(req)
	if err != nil {
		return fmt.Errorf("backup: upload to S3: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return fmt.Errorf("backup: S3 refused the upload: %s %s", resp.Status, msg)
	}
	return nil
}

type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func readLast(path string) (*filekey.Backup, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var bk filekey.Backup
	if err := json.Unmarshal(b, &bk); err != nil {
		return nil, err
	}
	return &bk, nil
}

func writeLast(path string, bk filekey.Backup) error {
	b, err := json.Marshal(bk)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ErrExists: restore would overwrite a database.
var ErrExists = errors.New("backup: a database exists")
