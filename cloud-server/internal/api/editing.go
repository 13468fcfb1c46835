package api

import (
	"context"
	"net/http"

	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// EditRecords adapts the cloud store to edit sessions; IDs mints change ids.
type EditRecords struct {
	St  *store.Store
	IDs IDs
}

// Version is the record's current version.
func (e EditRecords) Version(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) (version.V, error) {
	r, err := e.St.Get(ctx, clinic, kind, id)
	if err != nil {
		return version.V{}, err
	}
	m := store.RecordMeta(r)
	if m.Deleted {
		return version.V{}, store.ErrNotFound
	}
	return m.Version, nil
}

// Save saves content in session s.
func (e EditRecords) Save(ctx context.Context, s editing.Session, content records.Content) (version.V, error) {
	changeID, err := e.IDs.Next()
	if err != nil {
		return version.V{}, err
	}
	r, err := e.St.Save(ctx, s.ClinicID, store.Edit{Kind: s.Kind, ID: s.RecordID, Content: content, ChangeID: changeID,
		Session: s.ID, SessionVersion: s.VersionAtLock, Fence: s.Fence, Unfenced: s.Unfenced})
	if err != nil {
		return version.V{}, err
	}
	return store.RecordMeta(r).Version, nil
}

// registerEditing mounts the edit-session routes under /v1/clinics/{clinic}/.
func (s *Server) registerEditing(mux httpapi.Router) {
	if s.edit == nil {
		return
	}
	get := func(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) (any, error) {
		return s.st.Get(ctx, clinic, kind, id)
	}
	for _, rt := range s.edit.Routes(get, s.st.VersionContent) {
		h := rt.Handler
		mux.HandleFunc(rt.Method+" /v1/clinics/{clinic}/"+rt.Path, s.clinic(func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
			err := h(w, r, clinic)
			if err == nil {
				s.notify() // a save wrote an outbox row
			}
			return err
		}))
	}
	mux.HandleFunc("GET /v1/clinics/{clinic}/{collection}/{id}/versions", s.clinic(s.versions))
}

// Version is one kept version of a record in the cloud: an accepted change.
type Version struct {
	Version  version.V `json:"version"`
	Deleted  bool      `json:"deleted"`
	Origin   string    `json:"origin"`
	ChangeID ids.ID    `json:"change_id"`
	CloudSeq int64     `json:"cloud_seq"`
	Conflict string    `json:"conflict,omitempty"`
	Fence    int64     `json:"fence,omitempty"`
	Unfenced bool      `json:"unfenced,omitempty"`
	Session  string    `json:"session,omitempty"`
	// SavedBy is the person who saved the version (their user record's
	// id; absent: no person) and SavedByName their username then (M18).
	SavedBy     ids.ID `json:"saved_by,omitempty"`
	SavedByName string `json:"saved_by_name,omitempty"`
	At          string `json:"at"`
	AcceptedAt  string `json:"accepted_at"`
}

func (s *Server) versions(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	if _, err := s.st.Get(r.Context(), clinic, spec.Kind, id); err != nil {
		return err
	}
	chs, err := s.st.Versions(r.Context(), clinic, spec.Kind, id)
	if err != nil {
		return err
	}
	out := make([]Version, 0, len(chs))
	for _, ch := range chs {
		out = append(out, Version{Version: ch.NewVersion, Deleted: ch.Deleted, Origin: ch.Origin, ChangeID: ch.ChangeID,
			CloudSeq: ch.CloudSeq, Conflict: ch.Conflict, Fence: ch.Fence, Unfenced: ch.Unfenced, Session: ch.Session,
			SavedBy: ch.SavedBy, SavedByName: ch.SavedByName,
			At: ch.At.Format(timeFormat), AcceptedAt: ch.AcceptedAt.Format(timeFormat)})
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": out})
	return nil
}

const timeFormat = "2006-01-02T15:04:05.000Z07:00"
