package api

import (
	"context"
	"net/http"

	"github.com/scsync/scsync/local-server/internal/backup"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
)

// Backups is the backup service the API exposes.
type Backups interface {
	Status() backup.Status
	Now(ctx context.Context) (filekey.Backup, error)
}

// WithBackup enables GET /v1/backup (status) and POST /v1/backup (take
// one now).
func (s *Server) WithBackup(b Backups) *Server {
	s.backups = b
	return s
}

func (s *Server) registerBackup(mux httpapi.Router) {
	if s.backups == nil {
		return
	}
	mux.HandleFunc("GET /v1/backup", s.wrap(func(w http.ResponseWriter, _ *http.Request) error {
		httpapi.WriteJSON(w, http.StatusOK, s.backups.Status())
		return nil
	}))
	mux.HandleFunc("POST /v1/backup", s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		b, err := s.backups.Now(r.Context())
		if err != nil {
			s.log.Warn("backup failed", "err", err)
			return httpapi.Errorf(http.StatusBadGateway, "backup_failed", "%s", err.Error())
		}
		httpapi.WriteJSON(w, http.StatusCreated, b)
		return nil
	}))
}
