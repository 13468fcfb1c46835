package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/local-server/internal/importdir"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/local-server/internal/transfer"
)

// fetchMissing queues the download of every file a record names that the
// clinic has neither uploaded nor downloaded (images made in the cloud,
// a restored database), into dir/<sha256>, until ctx ends.
func fetchMissing(ctx context.Context, st *store.Store, w *transfer.Worker, dir string, every time.Duration, log *slog.Logger) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		refs, err := st.MissingFiles(ctx, transfer.Transfer{}.TableName(), 500)
		if err != nil && ctx.Err() == nil {
			log.Warn("listing missing files failed", "err", err)
		}
		for _, f := range refs {
			if err := w.EnqueueFetch(ctx, transfer.Download{SHA256: f.SHA256, Size: f.Size, Path: filepath.Join(dir, f.SHA256)}); err != nil && ctx.Err() == nil {
				log.Warn("queueing a download failed", "sha256", f.SHA256, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// fileHold decides when an upload may go (M4, M8): a file no record in the
// sync scope names stays here; a file only backfilled records name (history)
// goes after the records' backfill and within the files' backfill window;
// a file of a live change goes at once.
type fileHold struct {
	st           *store.Store
	window       *config.Window
	backfillLeft func() int64
	now          func() time.Time
}

func (h fileHold) hold(ctx context.Context, t transfer.Transfer) (time.Duration, string, error) {
	want, err := h.st.FileWanted(ctx, t.SHA256)
	if err != nil {
		return 0, "", err
	}
	switch {
	case !want.Wanted:
		return time.Minute, "waiting: no record in the sync scope names this file", nil
	case want.Live:
		return 0, "", nil
	case h.backfillLeft() > 0:
		return 30 * time.Second, "waiting: the backfill sends the records first, then their files", nil
	}
	if h.window != nil {
		if d := h.window.Until(h.now()); d > 0 {
			return d, fmt.Sprintf("waiting for the files' backfill window %s", h.window), nil
		}
	}
	return 0, "", nil
}

// openImportDirs resolves files.import_dirs; the default one (the data
// directory's import/) is created when missing, configured ones must exist.
func openImportDirs(cfg config.Config) (*importdir.Dirs, error) {
	if len(cfg.Files.ImportDirs) == 0 {
		if err := os.MkdirAll(cfg.DefaultImportDir(), 0o700); err != nil {
			return nil, fmt.Errorf("files.import_dirs: %w", err)
		}
	}
	d, err := importdir.New(cfg.ImportDirs())
	if err != nil {
		return nil, fmt.Errorf("files.import_dirs: %w", err)
	}
	return d, nil
}
