package api

import (
	"cmp"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/thumb"
	"github.com/scsync/scsync/shared/wire"
)

// WithThumbnails serves image thumbnails made from the originals this
// clinic holds: downloaded ones in filesDir/<sha256>, imported ones where
// their upload read them; cached in cacheDir.
func (s *Server) WithThumbnails(filesDir, cacheDir string) *Server {
	s.filesDir, s.thumbs = filesDir, &thumb.Cache{Dir: cacheDir}
	return s
}

func (s *Server) registerThumbnails(mux httpapi.Router) {
	if s.thumbs == nil {
		return
	}
	mux.HandleFunc("GET /v1/images/{id}/thumbnail", s.wrap(s.thumbnail))
	mux.HandleFunc("GET /v1/images/{id}/original", s.wrap(s.original))
}

// imageFile is the image record of the request's {id} and its file's
// sha256; none (no file, or a tombstone) is the error none.
func (s *Server) imageFile(r *http.Request, none error) (store.Record, string, error) {
	id, err := httpapi.RecordID(r)
	if err != nil {
		return nil, "", err
	}
	rec, err := s.st.Get(r.Context(), wire.KindImage, id)
	if err != nil {
		return nil, "", err
	}
	sha := store.FileOf(rec)
	if sha == "" || store.RecordMeta(rec).Deleted {
		return nil, "", none
	}
	return rec, sha, nil
}

var errNoOriginal = httpapi.Errorf(http.StatusNotFound, "no_file", "the image's file is not on this server")

// original answers GET /v1/images/{id}/original: the image's file as this
// clinic holds it (downloaded, or where its import read it), unchanged,
// shown in the browser where it can be (ranges answered).
func (s *Server) original(w http.ResponseWriter, r *http.Request) error {
	rec, sha, err := s.imageFile(r, errNoOriginal)
	if err != nil {
		return err
	}
	rc, err := s.openOriginal(r, sha)
	if errors.Is(err, os.ErrNotExist) {
		return errNoOriginal
	}
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	f, ok := rc.(*os.File)
	if !ok {
		return errNoOriginal
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	img, _ := store.RecordContent(rec).(records.Image)
	name := cmp.Or(filepath.Base(img.FileName), sha)
	h := w.Header()
	if img.ContentType != "" {
		h.Set("Content-Type", img.ContentType)
	}
	h.Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": name}))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox") // never run what a file holds
	h.Set("Cache-Control", "private, no-cache")
	http.ServeContent(w, r, name, st.ModTime(), f)
	return nil
}

var errNoThumbnail = httpapi.Errorf(http.StatusNotFound, "no_thumbnail", "no thumbnail: the original is not a PNG, JPEG or GIF picture, or not on this server")

// thumbnail answers GET /v1/images/{id}/thumbnail: a JPEG of at most
// thumb.Size pixels, cached; the original is never written.
func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request) error {
	_, sha, err := s.imageFile(r, errNoThumbnail)
	if err != nil {
		return err
	}
	b, err := s.thumbs.Get(sha, func() (io.ReadCloser, error) { return s.openOriginal(r, sha) })
	if errors.Is(err, thumb.ErrNoThumbnail) || errors.Is(err, thumb.ErrMismatch) {
		return errNoThumbnail
	}
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "image/jpeg")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	// Content-addressed: the thumbnail of a checksum never changes.
	h.Set("Cache-Control", "private, max-age=86400")
	h.Set("ETag", `"`+sha+`"`)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return nil
}

// openOriginal opens the original with sha for reading: the downloaded
// copy, else an upload's source file.
func (s *Server) openOriginal(r *http.Request, sha string) (io.ReadCloser, error) {
	if f, err := os.Open(filepath.Join(s.filesDir, sha)); err == nil {
		return f, nil
	}
	if s.files == nil {
		return nil, os.ErrNotExist
	}
	ts, err := s.files.List(r.Context(), transfer.Filter{SHA256: sha, Limit: 10})
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		if f, err := os.Open(t.Path); err == nil {
			return f, nil
		}
	}
	return nil, os.ErrNotExist
}
