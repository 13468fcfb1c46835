package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/local-server/internal/verify"
	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/wire"
)

// notifier turns what happens here into events for viewers: edit sessions
// and file transfers go on the bus (to every server, M14); changes applied
// from the cloud go to this server's viewers only (the cloud's viewers
// were told by the cloud).
type notifier struct {
	log *slog.Logger
	bus *events.Bus
	hub *events.Hub
	st  *store.Store
}

func (n *notifier) note(ctx context.Context, e editing.Note) {
	n.publish(ctx, editEvent(e))
}

// editEvent is the viewer event of a session note (the types and reasons
// are the same words).
func editEvent(e editing.Note) events.Event {
	return events.Event{Type: e.Type, Clinic: e.Session.ClinicID, Kind: string(e.Session.Kind), Record: e.Session.RecordID,
		Side: e.Session.Side, User: e.Session.User, Client: e.Session.Client, Session: e.Session.ID,
		Version: e.Version, Reason: e.Reason, Unfenced: e.Unfenced}
}

func (n *notifier) publish(ctx context.Context, e events.Event) {
	if err := n.bus.Publish(ctx, e); err != nil && ctx.Err() == nil {
		n.log.Warn("event not published", "type", e.Type, "err", err)
	}
}

// transfer tells viewers a file's state (Uploading, Downloading, M16).
func (n *notifier) transfer(t transfer.Transfer) {
	ctx := context.Background()
	kind, id, ok, err := n.st.RecordOfFile(ctx, t.SHA256)
	if err != nil || !ok {
		return
	}
	n.publish(ctx, events.Event{Type: events.TypeTransfer, Clinic: n.st.Clinic(), Kind: string(kind), Record: id,
		Side: events.SideLocal, Transfer: &events.Transfer{State: t.State, BytesDone: t.BytesDone, BytesTotal: t.Size, Reason: t.Reason}})
}

// applied tells this server's viewers that records changed from the cloud.
func (n *notifier) applied(es []wire.Envelope) {
	for _, e := range es {
		ev := events.Event{Type: events.TypeChanged, Clinic: e.Clinic, Kind: string(e.Kind), Record: e.RecordID, Version: e.NewVersion}
		if e.Conflict == wire.ResolvedKeepBoth || e.ConflictOf != 0 {
			ev.Type, ev.Reason = events.TypeConflict, wire.ResolvedKeepBoth
		}
		n.hub.Publish(ev)
	}
}

// divergence tells viewers on both sides that anti-entropy found the clinic
// and the cloud different (reason: how many records, and whether repaired).
func (n *notifier) divergence(r verify.Report) {
	reason := fmt.Sprintf("%d record(s) differ from the cloud", len(r.Differences))
	if r.Repair {
		reason += "; repairing"
	}
	n.publish(context.Background(), events.Event{Type: events.TypeDivergence, Clinic: n.st.Clinic(), Kind: "verify", Side: events.SideLocal, Reason: reason})
}
