package api

import (
	"net/http"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/httpapi"
)

// WithBackfill enables GET /v1/backfill with the syncer's progress.
func (s *Server) WithBackfill(progress func() any) *Server {
	s.backfill = progress
	return s
}

func (s *Server) registerScope(mux httpapi.Router) {
	mux.HandleFunc("GET /v1/scope", s.wrap(s.getScope))
	mux.HandleFunc("PUT /v1/scope", s.wrap(s.putScope))
	mux.HandleFunc("PUT /v1/{collection}/{id}/sync", s.wrap(s.setChoice))
	mux.HandleFunc("POST /v1/{collection}/{id}/unsync", s.wrap(s.unsync))
	if s.backfill != nil {
		mux.HandleFunc("GET /v1/backfill", s.wrap(func(w http.ResponseWriter, _ *http.Request) error {
			httpapi.WriteJSON(w, http.StatusOK, s.backfill())
			return nil
		}))
	}
}

// ScopeAnswer is the sync scope and what it means now.
type ScopeAnswer struct {
	store.Scope
	// Note says what changing the scope does.
	Note string `json:"note"`
}

const scopeNote = "widening the scope backfills what it newly covers, newest first; narrowing it does not remove from the cloud what is there already (un-sync those records explicitly)"

func (s *Server) getScope(w http.ResponseWriter, r *http.Request) error {
	sc, err := s.st.Scope(r.Context())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, ScopeAnswer{Scope: sc, Note: scopeNote})
	return nil
}

func (s *Server) putScope(w http.ResponseWriter, r *http.Request) error {
	var sc store.Scope
	if err := httpapi.Decode(w, r, &sc); err != nil {
		return err
	}
	if err := s.st.SetScope(r.Context(), sc); err != nil {
		return err
	}
	s.backfillWork() // the backfill may have new work
	s.reconsiderFiles(r.Context())
	httpapi.WriteJSON(w, http.StatusOK, ScopeAnswer{Scope: sc, Note: scopeNote})
	return nil
}

type choiceReq struct {
	// Choice is always, never, or "" to follow the scope.
	Choice string `json:"choice"`
}

func (s *Server) setChoice(w http.ResponseWriter, r *http.Request) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	var req choiceReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	rec, err := s.st.SetChoice(r.Context(), spec.Kind, id, req.Choice)
	if err != nil {
		return err
	}
	s.backfillWork() // a choice may bring a record into scope; an un-sync or re-sync wrote an outbox row
	s.reconsiderFiles(r.Context())
	// Synced again: the cloud may have deleted its file after the un-sync's
	// grace period; checking the upload again sends it if so.
	if sha := store.FileOf(rec); sha != "" && s.files != nil && req.Choice != store.ChoiceNever {
		if _, err := s.files.Recheck(r.Context(), sha); err != nil {
			s.log.Warn("re-checking the file of a re-synced record failed", "sha256", sha, "err", err)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, rec)
	return nil
}

// unsync takes a record out of the cloud; the clinic keeps its copy (M7).
// PUT …/sync {"choice":""} brings it back.
func (s *Server) unsync(w http.ResponseWriter, r *http.Request) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	rec, err := s.st.Unsync(r.Context(), spec.Kind, id)
	if err != nil {
		return err
	}
	s.notify()
	httpapi.WriteJSON(w, http.StatusOK, rec)
	return nil
}
