package retention

import (
	"errors"
	"net/http"

	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// Stable error codes of the retention API, besides the generic ones and
// the file API's (filekey.Code*).
const (
	// CodeInvalidRetention: mode not keep|delete|backup, or after_days
	// outside 1..36500 for delete and backup.
	CodeInvalidRetention = "invalid_retention"
)

// ClinicHandler is a route of one clinic, behind sc-cloud's clinic
// authorization (api.Server.Clinic); AdminHandler one behind the admin
// token (api.Server.Admin).
type (
	ClinicHandler = func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error
	AdminHandler  = func(w http.ResponseWriter, r *http.Request) error
)

// Auth is what Register needs from the API server.
type Auth interface {
	Admin(h AdminHandler) http.HandlerFunc
	Clinic(h ClinicHandler) http.HandlerFunc
	IsAdmin(r *http.Request) bool
}

// Register mounts the retention API on mux:
//
//	GET  /v1/admin/clinics/{clinic}/retention          → View (admin)
//	PUT  /v1/admin/clinics/{clinic}/retention          {mode, after_days} → View (admin)
//	GET  /v1/clinics/{clinic}/retention                → View (the clinic or admin)
//	POST /v1/clinics/{clinic}/files/{sha256}/restore   → Restored
//	POST /v1/clinics/{clinic}/{collection}/{id}/restore → Restored
func (s *Service) Register(mux httpapi.Router, auth Auth) {
	mux.HandleFunc("GET /v1/admin/clinics/{clinic}/retention", auth.Admin(s.adminView))
	mux.HandleFunc("PUT /v1/admin/clinics/{clinic}/retention", auth.Admin(s.adminSet))
	mux.HandleFunc("GET /v1/clinics/{clinic}/retention", auth.Clinic(s.clinicView))
	mux.HandleFunc("POST "+filekey.PathRestore, auth.Clinic(func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
		return s.restoreFile(w, r, clinic, actor(auth, r))
	}))
	mux.HandleFunc("POST /v1/clinics/{clinic}/{collection}/{id}/restore", auth.Clinic(func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
		return s.restoreRecord(w, r, clinic, actor(auth, r))
	}))
}

func actor(auth Auth, r *http.Request) string {
	if auth.IsAdmin(r) {
		return "admin"
	}
	return "clinic"
}

// apiError maps the service's errors to API errors; store errors pass
// through to the API server's own mapping.
func apiError(err error) error {
	if errors.Is(err, store.ErrInvalidRetention) {
		return httpapi.Errorf(http.StatusBadRequest, CodeInvalidRetention, "mode must be keep, delete or backup; after_days 1..%d with delete and backup", store.MaxRetentionDays)
	}
	return files.APIError(err)
}

func pathClinic(r *http.Request) (ids.ID, error) {
	clinic, err := ids.Parse(r.PathValue("clinic"))
	if err != nil {
		return 0, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "clinic must be a numeric id")
	}
	return clinic, nil
}

func (s *Service) adminView(w http.ResponseWriter, r *http.Request) error {
	clinic, err := pathClinic(r)
	if err != nil {
		return err
	}
	return s.clinicView(w, r, clinic)
}

func (s *Service) clinicView(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	v, err := s.State(r.Context(), clinic)
	if err != nil {
		return apiError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
	return nil
}

// PolicyRequest sets a clinic's retention.
type PolicyRequest struct {
	Mode      string `json:"mode"`
	AfterDays int    `json:"after_days,omitempty"`
}

func (s *Service) adminSet(w http.ResponseWriter, r *http.Request) error {
	clinic, err := pathClinic(r)
	if err != nil {
		return err
	}
	var req PolicyRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if req.Mode == store.RetentionBackup && !s.files.ColdStorage() {
		return apiError(files.ErrNoColdStorage)
	}
	if _, err := s.st.SetRetention(r.Context(), clinic, req.Mode, req.AfterDays); err != nil {
		return apiError(err)
	}
	s.log.Info("retention policy set", "clinic", clinic, "mode", req.Mode, "after_days", req.AfterDays)
	return s.clinicView(w, r, clinic)
}

func (s *Service) restoreFile(w http.ResponseWriter, r *http.Request, clinic ids.ID, actor string) error {
	out, err := s.RestoreFile(r.Context(), clinic, r.PathValue("sha256"), actor)
	if err != nil {
		return apiError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Service) restoreRecord(w http.ResponseWriter, r *http.Request, clinic ids.ID, actor string) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	out, err := s.RestoreRecord(r.Context(), clinic, spec.Kind, id, actor)
	if err != nil {
		return apiError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}
