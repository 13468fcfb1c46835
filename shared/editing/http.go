package editing

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// HandlerFunc is a handler for a request already authorized for clinic.
type HandlerFunc func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error

// Route is one edit-session endpoint, relative to the server's record
// prefix ("/v1/" on sc-local, "/v1/clinics/{clinic}/" on sc-cloud).
type Route struct {
	Method, Path string
	Handler      HandlerFunc
}

// RecordGetter returns a record for the API's answer after a save.
type RecordGetter func(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) (any, error)

// VersionContent returns a record's content at a kept version (rollback).
type VersionContent func(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, v version.V) (records.Content, error)

// Routes returns the edit-session endpoints (documented in docs/editing.md):
//
//	GET  editing                          open sessions of the clinic
//	POST {collection}/{id}/edit           open a session (lock)
//	POST {collection}/{id}/heartbeat      keep it alive; activity resets the idle clock
//	POST {collection}/{id}/save           save inside the session
//	POST {collection}/{id}/rollback       save an old version's content inside the session
//	POST {collection}/{id}/close          close it (release)
func (m *Manager) Routes(get RecordGetter, old VersionContent) []Route {
	h := &handlers{m: m, get: get, old: old}
	return []Route{
		{http.MethodGet, "editing", h.list},
		{http.MethodPost, "{collection}/{id}/edit", h.open},
		{http.MethodPost, "{collection}/{id}/heartbeat", h.heartbeat},
		{http.MethodPost, "{collection}/{id}/save", h.save},
		{http.MethodPost, "{collection}/{id}/rollback", h.rollback},
		{http.MethodPost, "{collection}/{id}/close", h.close},
	}
}

type handlers struct {
	m   *Manager
	get RecordGetter
	old VersionContent
}

// OpenRequest opens a session.
type OpenRequest struct {
	Client string `json:"client"`
	// User is ignored when the caller authenticated: the session's user is
	// the logged-in person.
	User string `json:"user,omitempty"`
	// Anyway opens an unfenced session when lockd is unreachable (M13).
	Anyway bool `json:"anyway,omitempty"`
}

// SessionInfo answers open and heartbeat.
type SessionInfo struct {
	Session
	// HeartbeatMillis is how often the client should send a heartbeat.
	HeartbeatMillis int64 `json:"heartbeat_ms"`
	// IdleWarnMillis is the idle time after which the session is warned.
	IdleWarnMillis int64 `json:"idle_warn_after_ms"`
	// IdleCloseMillis is the idle time after which it is closed.
	IdleCloseMillis int64 `json:"idle_close_after_ms"`
}

func (h *handlers) info(s Session) SessionInfo {
	c := h.m.cfg
	return SessionInfo{Session: s, HeartbeatMillis: (c.LockTTL / 4).Milliseconds(),
		IdleWarnMillis: c.IdleWarn.Milliseconds(), IdleCloseMillis: (c.IdleWarn + c.IdleGrace).Milliseconds()}
}

// SessionRequest names a session (heartbeat, close).
type SessionRequest struct {
	Session  string `json:"session"`
	Activity bool   `json:"activity,omitempty"`
}

// SaveRequest saves content inside a session.
type SaveRequest struct {
	Session string          `json:"session"`
	Data    json.RawMessage `json:"data"`
}

// RollbackRequest writes an old version's content inside a session.
type RollbackRequest struct {
	Session string    `json:"session"`
	Version version.V `json:"version"`
}

// SaveAnswer is the record after a save, with its new version.
type SaveAnswer struct {
	Session string    `json:"session"`
	Version version.V `json:"version"`
	Record  any       `json:"record"`
}

func target(r *http.Request) (records.Spec, ids.ID, error) {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return spec, 0, err
	}
	id, err := httpapi.RecordID(r)
	return spec, id, err
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	ss, err := h.m.OpenSessions(r.Context(), clinic)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": ss})
	return nil
}

func (h *handlers) open(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, id, err := target(r)
	if err != nil {
		return err
	}
	var req OpenRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	// The session's user is the authenticated caller, never the client's
	// text; the body's user is only read where no one authenticated (a
	// router without a guard, as in unit tests).
	if p := auth.From(r.Context()); p.Kind == auth.KindPerson {
		req.User = p.Username
	} else if p.Kind != "" {
		req.User = p.Kind
	}
	if req.Client == "" || req.User == "" {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "client and user are required")
	}
	s, err := h.m.Open(r.Context(), clinic, spec.Kind, id, req.User, req.Client, req.Anyway)
	if err != nil {
		return MapError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, h.info(s))
	return nil
}

func (h *handlers) heartbeat(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req SessionRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	s, err := h.m.Heartbeat(r.Context(), clinic, req.Session, req.Activity)
	if err != nil {
		return MapError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, h.info(s))
	return nil
}

func (h *handlers) save(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, id, err := target(r)
	if err != nil {
		return err
	}
	var req SaveRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	c, err := records.Decode(spec.Kind, req.Data)
	if err != nil {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRecord, "%s", err.Error())
	}
	return h.saveContent(w, r, clinic, spec.Kind, id, req.Session, c)
}

func (h *handlers) rollback(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, id, err := target(r)
	if err != nil {
		return err
	}
	var req RollbackRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	c, err := h.old(r.Context(), clinic, spec.Kind, id, req.Version)
	if err != nil {
		return MapError(err)
	}
	return h.saveContent(w, r, clinic, spec.Kind, id, req.Session, c)
}

func (h *handlers) saveContent(w http.ResponseWriter, r *http.Request, clinic ids.ID, kind wire.Kind, id ids.ID, session string, c records.Content) error {
	s, err := h.m.Get(r.Context(), clinic, session)
	if err != nil {
		return MapError(err)
	}
	if s.Kind != kind || s.RecordID != id {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "session %s edits %s %s, not this record", s.ID, s.Kind, s.RecordID)
	}
	_, v, err := h.m.Save(r.Context(), clinic, session, c)
	if err != nil {
		return MapError(err)
	}
	rec, err := h.get(r.Context(), clinic, kind, id)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, SaveAnswer{Session: session, Version: v, Record: rec})
	return nil
}

func (h *handlers) close(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req SessionRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := h.m.Close(r.Context(), clinic, req.Session); err != nil {
		return MapError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"session": req.Session, "closed": true})
	return nil
}

// MapError turns session errors into API errors; others pass through for
// the server's own mapping.
func MapError(err error) error {
	var le *LockedError
	switch {
	case errors.As(err, &le):
		e := httpapi.Errorf(http.StatusConflict, "locked", "being edited by %s (%s side) since %s", le.Holder.User, le.Holder.Side, le.Since.UTC().Format(time.RFC3339))
		e.Holder = le.Holder
		return e
	case errors.Is(err, ErrLockUnavailable):
		e := httpapi.Errorf(http.StatusServiceUnavailable, "lock_unavailable",
			"the lock service cannot be reached: edit anyway (another editor's changes may conflict and go through the conflict policy) or view only")
		e.Options = []string{"edit_anyway", "view_only"}
		return e
	case errors.Is(err, ErrLockLost):
		return httpapi.Errorf(http.StatusConflict, "lock_lost", "the edit lock expired or was taken over; open the record again")
	case errors.Is(err, ErrNotSynced):
		return httpapi.Errorf(http.StatusConflict, "not_synced", "%s; try again in a moment", afterPrefix(err.Error(), "editing: "))
	case errors.Is(err, ErrNoSession):
		return httpapi.Errorf(http.StatusNotFound, "no_session", "no such open edit session")
	}
	return err
}

func afterPrefix(msg, p string) string {
	if len(msg) >= len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}
