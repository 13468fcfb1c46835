package api

import (
	"net/http"

	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/search"
	"github.com/scsync/scsync/shared/version"
)

// registerSearch mounts the viewer's patient search and a kept version's
// content (for the history's diff).
func (s *Server) registerSearch(mux httpapi.Router) {
	mux.HandleFunc("GET /v1/patients/search", s.wrap(s.searchPatients))
	mux.HandleFunc("GET /v1/{collection}/{id}/versions/{version}", s.wrap(s.versionContent))
}

func (s *Server) searchPatients(w http.ResponseWriter, r *http.Request) error {
	q, err := search.FromURL(r.URL.Query())
	if err != nil {
		return search.HTTPError(err)
	}
	rs, next, err := s.st.SearchPatients(r.Context(), q)
	if err != nil {
		return search.HTTPError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, search.NewPage(rs, q.By, next))
	return nil
}

// VersionContent is a kept version of a record: GET …/versions/{version}.
type VersionContent struct {
	Version version.V `json:"version"`
	Data    any       `json:"data"`
}

func (s *Server) versionContent(w http.ResponseWriter, r *http.Request) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	v, err := version.Parse(r.PathValue("version"))
	if err != nil {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "version must be A.B")
	}
	c, err := s.st.VersionContent(r.Context(), spec.Kind, id, v)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, VersionContent{Version: v, Data: c})
	return nil
}
