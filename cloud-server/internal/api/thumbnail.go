package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// ErrNoThumbnail is what a Thumbnails function returns for a file without
// one (not a picture, not present, too large).
var ErrNoThumbnail = errors.New("api: no thumbnail")

// Thumbnails makes the thumbnail of clinic's file sha (files.Service).
type Thumbnails func(ctx context.Context, clinic ids.ID, sha string) ([]byte, error)

var errNoThumbnail = httpapi.Errorf(http.StatusNotFound, "no_thumbnail", "no thumbnail: the original is not a PNG, JPEG or GIF picture, or not in the cloud")

// RegisterThumbnails mounts GET /v1/clinics/{clinic}/images/{id}/thumbnail
// under the clinic's authorization.
func (s *Server) RegisterThumbnails(mux httpapi.Router, makeThumb Thumbnails) {
	mux.HandleFunc("GET /v1/clinics/{clinic}/images/{id}/thumbnail", s.clinic(func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
		sha, err := s.imageFile(r, clinic, errNoThumbnail)
		if err != nil {
			return err
		}
		b, err := makeThumb(r.Context(), clinic, sha)
		if errors.Is(err, ErrNoThumbnail) {
			return errNoThumbnail
		}
		if err != nil {
			return err
		}
		h := w.Header()
		h.Set("Content-Type", "image/jpeg")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		h.Set("Cache-Control", "private, max-age=86400")
		h.Set("ETag", `"`+sha+`"`)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
		return nil
	}))
}

// Originals presigns a GET of clinic's file sha (files.Service.DownloadURL),
// its errors already API errors.
type Originals func(ctx context.Context, clinic ids.ID, sha string) (url string, err error)

// RegisterOriginals mounts GET /v1/clinics/{clinic}/images/{id}/original
// under the clinic's authorization: a redirect to a short-lived presigned
// GET of the image's file, so its bytes go from S3 to the browser, not
// through the node.
func (s *Server) RegisterOriginals(mux httpapi.Router, presign Originals) {
	mux.HandleFunc("GET /v1/clinics/{clinic}/images/{id}/original", s.clinic(func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
		sha, err := s.imageFile(r, clinic, errNoFile)
		if err != nil {
			return err
		}
		url, err := presign(r.Context(), clinic, sha)
		if err != nil {
			return err
		}
		w.Header().Set("Cache-Control", "no-store") // a presigned URL
		http.Redirect(w, r, url, http.StatusFound)
		return nil
	}))
}

var errNoFile = httpapi.Errorf(http.StatusNotFound, "no_file", "the image has no file in the cloud")

// imageFile is the sha256 of the file of clinic's image {id}; none (no
// file, or a tombstone) is the error none.
func (s *Server) imageFile(r *http.Request, clinic ids.ID, none error) (string, error) {
	id, err := httpapi.RecordID(r)
	if err != nil {
		return "", err
	}
	rec, err := s.st.Get(r.Context(), clinic, wire.KindImage, id)
	if err != nil {
		return "", err
	}
	row, ok := rec.(*store.Row[records.Image])
	if !ok || row.Deleted || row.Data.SHA256 == "" {
		return "", none
	}
	return row.Data.SHA256, nil
}
