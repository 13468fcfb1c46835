// Package api is sc-local's REST API for the clinic's viewer clients: records
// (create, read, update, delete, paged lists) and the replication status.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
)

// Server holds the handlers' dependencies.
type Server struct {
	st     *store.Store
	notify func()
	log    *slog.Logger
}

// New returns the API; notify is called after a commit wrote an outbox row.
func New(st *store.Store, notify func(), log *slog.Logger) *Server {
	return &Server{st: st, notify: notify, log: log}
}

// Register mounts the routes on mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/status", s.wrap(s.status))
	mux.HandleFunc("GET /v1/patients", s.wrap(s.listPatients))
	mux.HandleFunc("POST /v1/patients", s.wrap(s.createPatient))
	mux.HandleFunc("GET /v1/patients/{id}", s.wrap(s.getPatient))
	mux.HandleFunc("PUT /v1/patients/{id}", s.wrap(s.updatePatient))
	mux.HandleFunc("DELETE /v1/patients/{id}", s.wrap(s.deletePatient))
}

func (s *Server) wrap(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			httpapi.WriteError(w, s.log, mapErr(err))
		}
	}
}

func mapErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such record")
	case errors.Is(err, store.ErrVersionConflict):
		return httpapi.Errorf(http.StatusConflict, "version_conflict", "%s", strings.TrimPrefix(err.Error(), "store: save patient: "))
	case errors.Is(err, records.ErrInvalid):
		return httpapi.Errorf(http.StatusBadRequest, "invalid_record", "%s", strings.TrimPrefix(err.Error(), "records: invalid: "))
	case errors.Is(err, context.Canceled):
		return httpapi.Errorf(499, "canceled", "request canceled")
	}
	return err
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	st, err := s.st.Status(r.Context())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
	return nil
}

// Page is a list response; Next is the cursor for the following page.
type Page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

func (s *Server) listPatients(w http.ResponseWriter, r *http.Request) error {
	q := store.ListQuery{Limit: 100}
	v := r.URL.Query()
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "limit must be 1..1000")
		}
		q.Limit = n
	}
	if a := v.Get("after"); a != "" {
		id, err := ids.Parse(a)
		if err != nil {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "after must be an id")
		}
		q.After = id
	}
	if u := v.Get("updated_since"); u != "" {
		t, err := time.Parse(time.RFC3339Nano, u)
		if err != nil {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "updated_since must be RFC 3339")
		}
		q.UpdatedSince = t
	}
	switch st := v.Get("sync_state"); st {
	case "", store.StatePending, store.StateSynced, store.StateConflict, store.StateExcluded:
		q.SyncState = st
	default:
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "sync_state must be pending, synced, conflict or excluded")
	}
	q.WithDeleted = v.Get("deleted") == "true"
	ps, err := s.st.ListPatients(r.Context(), q)
	if err != nil {
		return err
	}
	page := Page[store.Patient]{Items: ps}
	if len(ps) == q.Limit {
		page.Next = ps[len(ps)-1].ID.String()
	}
	httpapi.WriteJSON(w, http.StatusOK, page)
	return nil
}

func recordID(r *http.Request) (ids.ID, error) {
	id, err := ids.Parse(r.PathValue("id"))
	if err != nil {
		return 0, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "id must be a numeric id")
	}
	return id, nil
}

func (s *Server) getPatient(w http.ResponseWriter, r *http.Request) error {
	id, err := recordID(r)
	if err != nil {
		return err
	}
	p, err := s.st.GetPatient(r.Context(), id)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, p)
	return nil
}

// patientReq is a create or update; base_version, when given on update, must
// be the current version, otherwise 409 version_conflict.
type patientReq struct {
	records.Patient
	BaseVersion *version.V `json:"base_version,omitempty"`
}

func (s *Server) createPatient(w http.ResponseWriter, r *http.Request) error {
	var req patientReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	p, err := s.st.SavePatient(r.Context(), 0, nil, req.Patient, false)
	if err != nil {
		return err
	}
	s.notify()
	httpapi.WriteJSON(w, http.StatusCreated, p)
	return nil
}

func (s *Server) updatePatient(w http.ResponseWriter, r *http.Request) error {
	id, err := recordID(r)
	if err != nil {
		return err
	}
	var req patientReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	p, err := s.st.SavePatient(r.Context(), id, req.BaseVersion, req.Patient, false)
	if err != nil {
		return err
	}
	s.notify()
	httpapi.WriteJSON(w, http.StatusOK, p)
	return nil
}

func (s *Server) deletePatient(w http.ResponseWriter, r *http.Request) error {
	id, err := recordID(r)
	if err != nil {
		return err
	}
	var base *version.V
	if b := r.URL.Query().Get("base_version"); b != "" {
		v, err := version.Parse(b)
		if err != nil {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "base_version must be A.B")
		}
		base = &v
	}
	p, err := s.st.SavePatient(r.Context(), id, base, records.Patient{}, true)
	if err != nil {
		return err
	}
	s.notify()
	httpapi.WriteJSON(w, http.StatusOK, p)
	return nil
}
