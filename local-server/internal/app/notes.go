package app

import (
	"context"
	"log/slog"

	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/shared/editing"
)

// notifier turns edit-session notes into events for viewers.
type notifier struct {
	log *slog.Logger
}

func newNotifier(log *slog.Logger) *notifier { return &notifier{log: log} }

func (n *notifier) note(_ context.Context, e editing.Note) {
	n.log.Info("edit session event", "type", e.Type, "kind", e.Session.Kind, "record", e.Session.RecordID,
		"session", e.Session.ID, "version", e.Version, "reason", e.Reason, "unfenced", e.Unfenced)
}

func (n *notifier) transfer(t transfer.Transfer) {
	n.log.Debug("file transfer", "direction", t.Direction, "sha256", t.SHA256, "state", t.State, "bytes_done", t.BytesDone, "size", t.Size)
}
