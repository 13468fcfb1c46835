package api

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"

	"github.com/scsync/scsync/local-server/internal/importdir"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// Files is the clinic's file transfer queue as the API needs it.
type Files interface {
	EnqueueUpload(ctx context.Context, u transfer.Upload) (transfer.Transfer, error)
	List(ctx context.Context, f transfer.Filter) ([]transfer.Transfer, error)
	Get(ctx context.Context, id int64) (transfer.Transfer, error)
	Counts(ctx context.Context) (transfer.Counts, error)
	Recheck(ctx context.Context, sha string) (int64, error)
	Reconsider(ctx context.Context) error
}

// reconsiderFiles lets held uploads ask again whether they may go.
func (s *Server) reconsiderFiles(ctx context.Context) {
	if s.files == nil {
		return
	}
	if err := s.files.Reconsider(ctx); err != nil {
		s.log.Warn("reconsidering held uploads failed", "err", err)
	}
}

// CodeImportRefused answers a file import whose path is not a readable
// regular file inside an import directory, for whichever reason.
const CodeImportRefused = "import_path_refused"

// WithFiles enables the file routes; imports read only files inside dirs.
func (s *Server) WithFiles(f Files, dirs *importdir.Dirs) *Server {
	s.files = f
	s.importDirs = dirs
	return s
}

func (s *Server) registerFiles(mux httpapi.Router) {
	if s.files == nil {
		return
	}
	mux.HandleFunc("POST /v1/files", s.wrap(s.importFile))
	mux.HandleFunc("GET /v1/files", s.wrap(s.listFiles))
	mux.HandleFunc("GET /v1/files/{id}", s.wrap(s.getFile))
}

// ImportRequest imports a file from the clinic's disk (where the imaging
// device wrote it) and attaches it to an image record.
type ImportRequest struct {
	Path        string `json:"path"`
	ContentType string `json:"content_type,omitempty"`
	// ImageID, when set, names the image record the file is the original of.
	ImageID ids.ID `json:"image_id,omitempty"`
}

// ImportAnswer is the queued transfer and, with an image, the record.
type ImportAnswer struct {
	Transfer transfer.Transfer `json:"transfer"`
	Image    store.Record      `json:"image,omitempty"`
}

// importFile hashes the file, queues its upload, and records its SHA-256
// and size on the image. An image's original never changes (M19): an image
// that has a file already refuses another one; a derived image is a new
// record naming its source in derived_from.
func (s *Server) importFile(w http.ResponseWriter, r *http.Request) error {
	var req ImportRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	// Only files inside the import directories may be read, whatever the
	// path says after its links are resolved; every refusal is the same
	// answer, so the API tells nothing about what exists elsewhere.
	path, err := s.importDirs.Resolve(req.Path)
	if err != nil {
		var why *importdir.Reason
		if errors.As(err, &why) {
			s.log.Info("file import refused", "reason", why.Why)
		}
		return httpapi.Errorf(http.StatusForbidden, CodeImportRefused,
			"path must name a readable regular file inside an import directory (files.import_dirs)")
	}
	req.Path = path
	var img store.Record
	var content records.Image
	if req.ImageID != 0 {
		rec, err := s.st.Get(r.Context(), wire.KindImage, req.ImageID)
		if err != nil {
			return err
		}
		content = store.RecordContent(rec).(records.Image)
		img = rec
	}
	sum, size, err := transfer.HashFile(req.Path)
	if err != nil {
		s.log.Info("file import refused", "reason", "hash failed", "err", err)
		return httpapi.Errorf(http.StatusForbidden, CodeImportRefused,
			"path must name a readable regular file inside an import directory (files.import_dirs)")
	}
	if img != nil && content.SHA256 != "" && content.SHA256 != sum {
		return httpapi.Errorf(http.StatusConflict, "immutable_original",
			"image %s already has its original file (sha256 %s); an edited image is a new record with derived_from", req.ImageID, content.SHA256)
	}
	// The image names its file first, so the upload, once queued, finds a
	// record in the sync scope naming it and goes at once.
	if img != nil && content.SHA256 != sum {
		content.SHA256, content.Size = sum, size
		if content.ContentType == "" {
			content.ContentType = req.ContentType
		}
		if content.FileName == "" {
			content.FileName = filepath.Base(req.Path)
		}
		if img, err = s.st.Save(r.Context(), store.Edit{Kind: wire.KindImage, ID: req.ImageID, Content: content}); err != nil {
			return err
		}
		s.notify()
	}
	t, err := s.files.EnqueueUpload(r.Context(), transfer.Upload{Path: req.Path, SHA256: sum, Size: size, ContentType: req.ContentType})
	if err != nil {
		s.log.Warn("queueing an imported file failed", "err", err)
		return httpapi.Errorf(http.StatusBadRequest, "import_failed", "the file could not be queued for upload")
	}
	httpapi.WriteJSON(w, http.StatusAccepted, ImportAnswer{Transfer: t, Image: img})
	return nil
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	ts, err := s.files.List(r.Context(), transfer.Filter{Direction: q.Get("direction"), State: q.Get("state"), SHA256: q.Get("sha256"), Limit: 1000})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": ts})
	return nil
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request) error {
	id, err := ids.Parse(r.PathValue("id"))
	if err != nil {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "id must be a transfer id")
	}
	t, err := s.files.Get(r.Context(), int64(id))
	if errors.Is(err, transfer.ErrNotFound) {
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such transfer")
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, t)
	return nil
}
