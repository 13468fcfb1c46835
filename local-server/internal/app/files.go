package app

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

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
			if _, err := w.EnqueueDownload(ctx, transfer.Download{SHA256: f.SHA256, Size: f.Size, Path: filepath.Join(dir, f.SHA256)}); err != nil && ctx.Err() == nil {
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
