// Package api is sc-cloud's REST API. Every route under /v1/clinics/{clinic}
// requires a bearer token: the clinic's own token (which reaches only that
// clinic) or the operator's admin token.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
)

// IDs mints ids for records created in the cloud and for changes.
type IDs interface {
	Next() (ids.ID, error)
}

// Server holds the handlers' dependencies.
type Server struct {
	st         *store.Store
	ids        IDs
	adminToken string
	notify     func()
	log        *slog.Logger
}

// New returns the API. notify is called after a commit that wrote an outbox row.
func New(st *store.Store, gen IDs, adminToken string, notify func(), log *slog.Logger) *Server {
	return &Server{st: st, ids: gen, adminToken: adminToken, notify: notify, log: log}
}

// Register mounts the routes on mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/admin/clinics", s.admin(s.createClinic))
	mux.HandleFunc("GET /v1/admin/clinics", s.admin(s.listClinics))
	mux.HandleFunc("GET /v1/clinics/{clinic}/patients", s.clinic(s.listPatients))
	mux.HandleFunc("POST /v1/clinics/{clinic}/patients", s.clinic(s.createPatient))
	mux.HandleFunc("GET /v1/clinics/{clinic}/patients/{id}", s.clinic(s.getPatient))
	mux.HandleFunc("PUT /v1/clinics/{clinic}/patients/{id}", s.clinic(s.updatePatient))
	mux.HandleFunc("DELETE /v1/clinics/{clinic}/patients/{id}", s.clinic(s.deletePatient))
	mux.HandleFunc("GET /v1/clinics/{clinic}/changes", s.clinic(s.changes))
}

type handler func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error

func bearer(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(tok)
}

func (s *Server) isAdmin(tok string) bool {
	return s.adminToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.adminToken)) == 1
}

var errUnauthorized = httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "missing or unknown bearer token")

func (s *Server) admin(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.isAdmin(bearer(r)) {
			httpapi.WriteError(w, s.log, errUnauthorized)
			return
		}
		if err := h(w, r); err != nil {
			httpapi.WriteError(w, s.log, mapErr(err))
		}
	}
}

// clinic authorizes the caller for the {clinic} of the path: a clinic token
// works only for its own clinic; a foreign clinic gets the same 404 as a
// missing one, so ids of other clinics cannot be probed.
func (s *Server) clinic(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		clinic, err := ids.Parse(r.PathValue("clinic"))
		if err != nil {
			httpapi.WriteError(w, s.log, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "clinic must be a numeric id"))
			return
		}
		tok := bearer(r)
		switch {
		case tok == "":
			httpapi.WriteError(w, s.log, errUnauthorized)
			return
		case s.isAdmin(tok):
			if _, err := s.st.ClinicByID(r.Context(), clinic); err != nil {
				httpapi.WriteError(w, s.log, mapErr(err))
				return
			}
		default:
			c, err := s.st.ClinicByToken(r.Context(), tok)
			if errors.Is(err, store.ErrUnknownClinic) {
				httpapi.WriteError(w, s.log, errUnauthorized)
				return
			}
			if err != nil {
				httpapi.WriteError(w, s.log, err)
				return
			}
			if c.ID != clinic {
				httpapi.WriteError(w, s.log, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such clinic"))
				return
			}
		}
		if err := h(w, r, clinic); err != nil {
			httpapi.WriteError(w, s.log, mapErr(err))
		}
	}
}

func mapErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such record")
	case errors.Is(err, store.ErrUnknownClinic):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such clinic")
	case errors.Is(err, store.ErrVersionConflict):
		return httpapi.Errorf(http.StatusConflict, "version_conflict", "%s", strings.TrimPrefix(err.Error(), "store: save patient: "))
	case errors.Is(err, records.ErrInvalid):
		return httpapi.Errorf(http.StatusBadRequest, "invalid_record", "%s", strings.TrimPrefix(err.Error(), "records: invalid: "))
	case errors.Is(err, context.Canceled):
		return httpapi.Errorf(499, "canceled", "request canceled")
	}
	return err
}

type createClinicReq struct {
	Name           string `json:"name"`
	ConflictPolicy string `json:"conflict_policy,omitempty"`
}

// ClinicCredentials is what enrollment hands a clinic, once.
type ClinicCredentials struct {
	store.Clinic
	Token string `json:"token"`
}

func (s *Server) createClinic(w http.ResponseWriter, r *http.Request) error {
	var req createClinicReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" {
		return httpapi.Errorf(http.StatusBadRequest, "invalid_clinic", "name is required")
	}
	switch req.ConflictPolicy {
	case "", store.PolicyLocalWins, store.PolicyCloudWins, store.PolicyKeepBoth:
	default:
		return httpapi.Errorf(http.StatusBadRequest, "invalid_clinic", "conflict_policy must be local-wins, cloud-wins or keep-both")
	}
	id, err := s.ids.Next()
	if err != nil {
		return err
	}
	c, tok, err := s.st.CreateClinic(r.Context(), id, req.Name, req.ConflictPolicy)
	if err != nil {
		return err
	}
	s.log.Info("clinic enrolled", "clinic", c.ID, "node", c.NodeID)
	httpapi.WriteJSON(w, http.StatusCreated, ClinicCredentials{Clinic: c, Token: tok})
	return nil
}

func (s *Server) listClinics(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.st.Clinics(r.Context())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"clinics": cs})
	return nil
}

// Page is a list response; Next is the cursor for the following page ("" at the end).
type Page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

func listQuery(r *http.Request) (store.ListQuery, error) {
	q := store.ListQuery{Limit: 100}
	v := r.URL.Query()
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return q, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "limit must be 1..1000")
		}
		q.Limit = n
	}
	if s := v.Get("after"); s != "" {
		id, err := ids.Parse(s)
		if err != nil {
			return q, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "after must be an id")
		}
		q.After = id
	}
	if s := v.Get("updated_since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return q, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "updated_since must be RFC 3339")
		}
		q.UpdatedSince = t
	}
	q.WithDeleted = v.Get("deleted") == "true"
	return q, nil
}

func (s *Server) listPatients(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	q, err := listQuery(r)
	if err != nil {
		return err
	}
	ps, err := s.st.ListPatients(r.Context(), clinic, q)
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

func (s *Server) getPatient(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	id, err := recordID(r)
	if err != nil {
		return err
	}
	p, err := s.st.GetPatient(r.Context(), clinic, id)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, p)
	return nil
}

// patientReq is a create or update; base_version, when given on update, must
// be the current version (optimistic check), otherwise 409 version_conflict.
type patientReq struct {
	records.Patient
	BaseVersion *version.V `json:"base_version,omitempty"`
}

func (s *Server) createPatient(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req patientReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	id, err := s.ids.Next()
	if err != nil {
		return err
	}
	p, err := s.st.SavePatient(r.Context(), clinic, id, version.V{}, req.Patient, id, false)
	if err != nil {
		return err
	}
	s.notify()
	httpapi.WriteJSON(w, http.StatusCreated, p)
	return nil
}

func (s *Server) updatePatient(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
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
	p, err := s.save(r.Context(), clinic, id, req.BaseVersion, req.Patient, false)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, p)
	return nil
}

func (s *Server) deletePatient(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
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
	p, err := s.save(r.Context(), clinic, id, base, records.Patient{}, true)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, p)
	return nil
}

// save applies a cloud edit; without a base version it edits whatever is current.
func (s *Server) save(ctx context.Context, clinic, id ids.ID, base *version.V, content records.Patient, deleted bool) (store.Patient, error) {
	var b version.V
	if base != nil {
		b = *base
	} else {
		cur, err := s.st.GetPatient(ctx, clinic, id)
		if err != nil {
			return store.Patient{}, err
		}
		b = cur.Version
	}
	changeID, err := s.ids.Next()
	if err != nil {
		return store.Patient{}, err
	}
	p, err := s.st.SavePatient(ctx, clinic, id, b, content, changeID, deleted)
	if err != nil {
		return store.Patient{}, err
	}
	s.notify()
	return p, nil
}

func (s *Server) changes(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	v := r.URL.Query()
	since, err := strconv.ParseInt(v.Get("since"), 10, 64)
	if v.Get("since") == "" {
		since, err = 0, nil
	}
	if err != nil || since < 0 {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "since must be a cloud_seq (≥ 0)")
	}
	limit := 500
	if s := v.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
		if err != nil || limit < 1 || limit > 5000 {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "limit must be 1..5000")
		}
	}
	page, err := s.st.ChangesSince(r.Context(), clinic, since, limit)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, page)
	return nil
}
