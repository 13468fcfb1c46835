package api

import (
	"context"
	"net/http"

	"github.com/scsync/scsync/local-server/internal/verify"
	"github.com/scsync/scsync/shared/httpapi"
)

// Verifier runs anti-entropy (docs/verify.md).
type Verifier interface {
	Run(ctx context.Context, repair bool) (verify.Report, error)
}

// WithVerify enables POST /v1/verify[?repair=true]: compare the clinic
// with the cloud now and report (and repair) every difference.
func (s *Server) WithVerify(v Verifier) *Server {
	s.verifier = v
	return s
}

func (s *Server) registerVerify(mux httpapi.Router) {
	if s.verifier == nil {
		return
	}
	mux.HandleFunc("POST /v1/verify", s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		rep, err := s.verifier.Run(r.Context(), r.URL.Query().Get("repair") == "true")
		if err != nil {
			return httpapi.Errorf(http.StatusBadGateway, "verify_failed", "%s", err.Error())
		}
		if rep.Repair && len(rep.Differences) > 0 {
			s.notify() // repairs wrote outbox rows
		}
		httpapi.WriteJSON(w, http.StatusOK, rep)
		return nil
	}))
}
