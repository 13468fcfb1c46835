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

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/filekey"
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
}

// Restore puts the newest backup of the clinic in the cloud at dbPath.
// A database already there is an error unless force, and then it is moved
// aside, never deleted. progress, when set, sees the download's bytes.
func Restore(ctx context.Context, cloud Cloud, dbPath string, force bool, progress func(done, total int64)) (Restored, error) {
	var out Restored
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o750); err != nil {
		return out, fmt.Errorf("backup: %w", err)
	}
	if _, err := os.Stat(dbPath); err == nil {
		if !force {
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
	gz := dbPath + ".restore.gz"
	defer func() { _ = os.Remove(gz) }()
	if err := fetch(ctx, dl, gz, progress); err != nil {
		return out, err
	}
	partial := dbPath + ".restoring"
	defer func() { _ = os.Remove(partial) }()
	if err := decompress(gz, partial); err != nil {
		return out, err
	}
	if out.Info, err = store.Describe(ctx, partial); err != nil {
		return out, err
	}
	if out.FilesToFetch, err = forgetLostFiles(ctx, partial); err != nil {
		return out, err
	}
	if err := os.Rename(partial, dbPath); err != nil {
		return out, fmt.Errorf("backup: %w", err)
	}
	return out, nil
}

// fetch downloads the backup to path and checks its size and SHA-256.
func fetch(ctx context.Context, dl filekey.BackupDownload, path string, progress func(done, total int64)) error {
	req, err := http.NewRequestWithContext(ctx, dl.Get.Method, dl.Get.URL, nil)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	dl.Get.Request(req.Header)
	resp, err := (&http.Client{Timeout: 6 * time.Hour}).Do(req)
	if err != nil {
		return fmt.Errorf("backup: download from S3: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("backup: S3 answered %s to the download", resp.Status)
	}
	f, err := os.Create(path)
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

func decompress(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer func() { _ = in.Close() }()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return fmt.Errorf("backup: not a gzip snapshot: %w", err)
	}
	out, err := os.Create(dst)
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
// record names from the cloud into its files directory. Edit sessions of
// the old machine are gone with it. It returns how many files will come.
func forgetLostFiles(ctx context.Context, path string) (int, error) {
	db, err := gorm.Open(sqlite.Open("file:"+path), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return 0, fmt.Errorf("backup: open the restored database: %w", err)
	}
	defer func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	}()
	db = db.WithContext(ctx)
	if db.Migrator().HasTable("edit_sessions") {
		if err := db.Exec("DELETE FROM edit_sessions").Error; err != nil {
			return 0, fmt.Errorf("backup: %w", err)
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
