package backup

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
)

// Restored describes a restore.
type Restored struct {
	Backup filekey.Backup
	Info   store.SnapshotInfo
	// MovedAside is where a database that was in the way went ("" if none).
	MovedAside string
	// FilesToFetch counts files the database names whose local copy is
	// gone: sc-local downloads them from the cloud when it starts.
	FilesToFetch int
	// Audit is the restore's own entry in the clinic's audit chain (zero
	// without RestoreOptions.AuditChain).
	Audit audit.Entry
}

// RestoreOptions shape a restore.
type RestoreOptions struct {
	// Identity is the backup recovery key (an age identity file).
	Identity string
	// Force moves a database that is in the way aside instead of refusing.
	Force bool
	// Progress, when set, sees the download's bytes.
	Progress func(done, total int64)
	// HTTP downloads the backup from S3 (nil: a client trusting the
	// system's roots); NewHTTP makes one trusting a private CA too.
	HTTP *http.Client
	// AuditChain, when set, is the clinic's audit chain: the entries the
	// cloud holds past the backup (cloud must be an AuditCloud) come back
	// into the restored database, then the restore is recorded there.
	AuditChain string
	// Clinic is the clinic the audit entry is of.
	Clinic ids.ID
}

// Restore puts the newest backup of the clinic in the cloud at dbPath.
// A database already there is an error unless o.Force, and then it is moved
// aside, never deleted.
//
// o.Identity is the backup recovery key: the backup is decrypted with it,
// and a restore without it fails before anything is downloaded.
func Restore(ctx context.Context, cloud Cloud, dbPath string, o RestoreOptions) (Restored, error) {
	var out Restored
	if _, err := readIdentities(o.Identity); err != nil {
		return out, err
	}
	var auditCloud AuditCloud
	if o.AuditChain != "" {
		ac, ok := cloud.(AuditCloud)
		if !ok {
			return out, errors.New("backup: the cloud client cannot read the audit chain")
		}
		auditCloud = ac
	}
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		return out, fmt.Errorf("backup: %w", err)
	}
	if _, err := os.Stat(dbPath); err == nil {
		if !o.Force {
			return out, fmt.Errorf("%w at %s: restore is for a replaced machine; move it away or use -force (it is then kept as a copy)", ErrExists, dbPath)
		}
		out.MovedAside = dbPath + ".before-restore-" + time.Now().UTC().Format("20060102T150405Z")
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if err := os.Rename(dbPath+suffix, out.MovedAside+suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				return out, fmt.Errorf("backup: move the database aside: %w", err)
			}
		}
	}
	dl, err := cloud.BackupDownload(ctx, "latest")
	if err != nil {
		return out, fmt.Errorf("backup: ask the cloud for the newest backup: %w", err)
	}
	out.Backup = dl.Backup
	gz := dbPath + ".restore.gz.age"
	defer func() { _ = os.Remove(gz) }()
	hc := o.HTTP
	if hc == nil {
		hc = NewHTTP(nil)
	}
	if err := fetch(ctx, hc, dl, gz, o.Progress); err != nil {
		return out, err
	}
	partial := dbPath + ".restoring"
	defer func() { _ = os.Remove(partial) }()
	if err := open(gz, partial, o.Identity); err != nil {
		return out, err
	}
	if out.Info, err = store.Describe(ctx, partial); err != nil {
		return out, err
	}
	err = withDB(ctx, partial, func(db *gorm.DB) error {
		if out.FilesToFetch, err = forgetLostFiles(db); err != nil {
			return err
		}
		if o.AuditChain == "" {
			return nil
		}
		out.Audit, err = restoreAudit(ctx, db, auditCloud, o.AuditChain, audit.Entry{
			Clinic: o.Clinic, Actor: "service", Action: "backup.restore", Target: dl.Backup.ID.String(), Outcome: http.StatusOK,
			Detail: fmt.Sprintf("backup of %s, %d records, up to cloud_seq %d", dl.Backup.CreatedAt.UTC().Format(time.RFC3339),
				out.Info.Records, out.Info.Checkpoint),
		})
		return err
	})
	if err != nil {
		return out, err
	}
	if err := os.Rename(partial, dbPath); err != nil {
		return out, fmt.Errorf("backup: %w", err)
	}
	return out, nil
}

// withDB opens the SQLite database at path for fn and closes it.
func withDB(ctx context.Context, path string, fn func(*gorm.DB) error) error {
	db, err := store.OpenPlain(path)
	if err != nil {
		return fmt.Errorf("backup: open the restored database: %w", err)
	}
	defer store.ClosePlain(db)
	return fn(db.WithContext(ctx))
}

// fetch downloads the backup to path and checks its size and SHA-256.
func fetch(ctx context.Context, hc *http.Client, dl filekey.BackupDownload, path string, progress func(done, total int64)) error {
	req, err := http.NewRequestWithContext(ctx, dl.Get.Method, dl.Get.URL, nil)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	dl.Get.Request(req.Header)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("backup: download from S3: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("backup: S3 answered %s to the download", resp.Status)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	w := &counter{w: io.MultiWriter(f, h)}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			if progress != nil {
				progress(w.n, dl.Backup.Size)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("backup: download from S3: %w", rerr)
		}
	}
	if w.n != dl.Backup.Size {
		return fmt.Errorf("backup: downloaded %d bytes, the backup has %d", w.n, dl.Backup.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != dl.Backup.SHA256 {
		return fmt.Errorf("backup: downloaded SHA-256 %s differs from the backup's %s", got, dl.Backup.SHA256)
	}
	return f.Sync()
}

// open decrypts and decompresses the downloaded backup src into dst.
func open(src, dst, identityFile string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer func() { _ = in.Close() }()
	plain, err := decrypter(in, identityFile)
	if err != nil {
		return err
	}
	zr, err := gzip.NewReader(plain)
	if err != nil {
		return fmt.Errorf("backup: not a gzip snapshot: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer func() { _ = out.Close() }()
	if _, err := io.Copy(out, zr); err != nil {
		return fmt.Errorf("backup: decompress: %w", err)
	}
	return out.Sync()
}

// forgetLostFiles drops the transfer rows of files whose local copy is not
// on this machine (a new disk): with no row, sc-local downloads each file a
// record names from the cloud into its files directory. Edit sessions and
// people's login sessions of the old machine are gone with it (a token
// taken before the backup must not come back to life). It returns how many
// files will come.
func forgetLostFiles(db *gorm.DB) (int, error) {
	for _, table := range []string{"edit_sessions", "person_sessions"} {
		if db.Migrator().HasTable(table) {
			if err := db.Exec("DELETE FROM " + table).Error; err != nil {
				return 0, fmt.Errorf("backup: %w", err)
			}
		}
	}
	if !db.Migrator().HasTable("file_transfers") {
		return 0, nil
	}
	var rows []struct {
		ID     int64
		SHA256 string `gorm:"column:sha256"`
		Path   string
	}
	if err := db.Raw("SELECT id, sha256, path FROM file_transfers").Scan(&rows).Error; err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	lost := map[string]bool{}
	for _, r := range rows {
		if _, err := os.Stat(r.Path); err == nil {
			continue
		}
		if db.Migrator().HasTable("file_transfer_parts") {
			if err := db.Exec("DELETE FROM file_transfer_parts WHERE transfer_id = ?", r.ID).Error; err != nil {
				return 0, fmt.Errorf("backup: %w", err)
			}
		}
		if err := db.Exec("DELETE FROM file_transfers WHERE id = ?", r.ID).Error; err != nil {
			return 0, fmt.Errorf("backup: %w", err)
		}
		lost[r.SHA256] = true
	}
	return len(lost), nil
}
