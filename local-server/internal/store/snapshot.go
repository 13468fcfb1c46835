package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/records"
)

// SnapshotInfo describes a database snapshot.
type SnapshotInfo struct {
	// Checkpoint is the cloud_seq the snapshot had applied: a clinic
	// restored from it catches up from there.
	Checkpoint int64
	// Records counts the records of every kind in it.
	Records int64
}

// Snapshot writes a consistent copy of the database to path (SQLite's
// VACUUM INTO, compacted) and describes it. It reads through a connection
// of its own: in WAL mode the clinic keeps saving while it runs.
func (s *Store) Snapshot(ctx context.Context, path string) (SnapshotInfo, error) {
	if _, err := os.Stat(path); err == nil {
		return SnapshotInfo{}, fmt.Errorf("store: snapshot: %s exists", path)
	}
	src, err := OpenPlain(s.path)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer ClosePlain(src)
	if err := src.WithContext(ctx).Exec("VACUUM INTO ?", path).Error; err != nil {
		return SnapshotInfo{}, fmt.Errorf("store: snapshot: %w", err)
	}
	return Describe(ctx, path)
}

// Describe reads a snapshot's checkpoint and record count.
func Describe(ctx context.Context, path string) (SnapshotInfo, error) {
	db, err := OpenPlain(path)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer ClosePlain(db)
	var info SnapshotInfo
	var kv KV
	err = db.WithContext(ctx).Take(&kv, "key = ?", metaCheckpoint).Error
	switch {
	case err == nil:
		if info.Checkpoint, err = strconv.ParseInt(kv.Value, 10, 64); err != nil {
			return info, fmt.Errorf("store: snapshot checkpoint %q: %w", kv.Value, err)
		}
	case !errors.Is(err, gorm.ErrRecordNotFound):
		return info, fmt.Errorf("store: %s is not an sc-local database: %w", path, err)
	}
	for _, sp := range records.Kinds {
		var n int64
		if err := db.WithContext(ctx).Table(sp.Table).Count(&n).Error; err != nil {
			return info, fmt.Errorf("store: %s is not an sc-local database: %w", path, err)
		}
		info.Records += n
	}
	return info, nil
}
