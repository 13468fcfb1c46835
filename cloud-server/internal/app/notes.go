package app

import (
	"context"
	"log/slog"

	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/wire"
)

// notifier turns what happens in the cloud into events for viewers on every
// server (M14): edit sessions, and clinic changes accepted here.
type notifier struct {
	log *slog.Logger
	bus *events.Bus
}

func (n *notifier) note(ctx context.Context, e editing.Note) {
	n.publish(ctx, events.Event{Type: e.Type, Clinic: e.Session.ClinicID, Kind: string(e.Session.Kind), Record: e.Session.RecordID,
		Side: e.Session.Side, User: e.Session.User, Client: e.Session.Client, Session: e.Session.ID,
		Version: e.Version, Reason: e.Reason, Unfenced: e.Unfenced})
}

// accepted tells viewers that records changed through replication.
func (n *notifier) accepted(es []wire.Envelope) {
	ctx := context.Background()
	for _, e := range es {
		ev := events.Event{Type: events.TypeChanged, Clinic: e.Clinic, Kind: string(e.Kind), Record: e.RecordID, Version: e.NewVersion}
		if e.Conflict != "" {
			ev.Type, ev.Reason = events.TypeConflict, e.Conflict
		}
		n.publish(ctx, ev)
	}
}

func (n *notifier) publish(ctx context.Context, e events.Event) {
	if err := n.bus.Publish(ctx, e); err != nil && ctx.Err() == nil {
		n.log.Warn("event not published", "type", e.Type, "err", err)
	}
}
