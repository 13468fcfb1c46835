package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// EditRecords adapts the clinic store to edit sessions.
type EditRecords struct{ St *store.Store }

// Version is the record's current version.
func (e EditRecords) Version(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) (version.V, error) {
	if clinic != e.St.Clinic() {
		return version.V{}, store.ErrNotFound
	}
	r, err := e.St.Get(ctx, kind, id)
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
	r, err := e.St.Save(ctx, store.Edit{Kind: s.Kind, ID: s.RecordID, Content: content, Session: s.ID, SessionVersion: s.VersionAtLock, Fence: s.Fence, Unfenced: s.Unfenced})
	if err != nil {
		return version.V{}, err
	}
	return store.RecordMeta(r).Version, nil
}

// registerEditing mounts the edit-session routes under /v1/.
func (s *Server) registerEditing(mux httpapi.Router) {
	get := func(ctx context.Context, _ ids.ID, kind wire.Kind, id ids.ID) (any, error) {
		return s.st.Get(ctx, kind, id)
	}
	old := func(ctx context.Context, _ ids.ID, kind wire.Kind, id ids.ID, v version.V) (records.Content, error) {
		return s.st.VersionContent(ctx, kind, id, v)
	}
	for _, rt := range s.edit.Routes(get, old) {
		h := rt.Handler
		mux.HandleFunc(fmt.Sprintf("%s /v1/%s", rt.Method, rt.Path), s.wrap(func(w http.ResponseWriter, r *http.Request) error {
			err := h(w, r, s.st.Clinic())
			if err == nil {
				s.notify() // a save wrote an outbox row
			}
			return err
		}))
	}
	mux.HandleFunc("GET /v1/{collection}/{id}/versions", s.wrap(s.versions))
}

func (s *Server) versions(w http.ResponseWriter, r *http.Request) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	if _, err := s.st.Get(r.Context(), spec.Kind, id); err != nil {
		return err
	}
	vs, err := s.st.Versions(r.Context(), spec.Kind, id)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": vs})
	return nil
}
