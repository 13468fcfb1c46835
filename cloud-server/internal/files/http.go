package files

import (
	"io"
	"net/http"
	"sync/atomic"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// Handler serves one file API route for clinic, the clinic the caller's
// authentication established (cloud-server/internal/api's clinic wrapper
// has exactly this signature). A handler touches only clinic's keys: keys
// are derived from clinic and the path's sha256, never read from a request.
// Errors are *httpapi.Error with a stable code (filekey.Code*, httpapi.Code*)
// or internal errors for the wrapper to answer with a 500.
type Handler = func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error

// Route is one route: a http.ServeMux pattern (method and path, with the
// {clinic} and {sha256} wildcards) and its handler.
type Route struct {
	Pattern string
	Handler Handler
}

// Routes lists the file API (see filekey's Path* constants). Mount each
// behind the clinic authentication:
//
//	for _, rt := range files.Routes() {
//		mux.HandleFunc(rt.Pattern, s.clinic(rt.Handler))
//	}
func (s *Service) Routes() []Route {
	return []Route{
		{"POST " + filekey.PathUpload, s.counted(s.handleBegin)},
		{"DELETE " + filekey.PathUpload, s.counted(s.handleAbort)},
		{"POST " + filekey.PathPartURLs, s.counted(s.handlePartURLs)},
		{"GET " + filekey.PathParts, s.counted(s.handleParts)},
		{"POST " + filekey.PathComplete, s.counted(s.handleComplete)},
		{"GET " + filekey.PathFile, s.counted(s.handleStat)},
		{"POST " + filekey.PathCheck, s.counted(s.handleCheck)},
		{"GET " + filekey.PathDownload, s.counted(s.handleDownload)},
	}
}

// Register mounts Routes on mux, each wrapped by auth.
func (s *Service) Register(mux httpapi.Router, auth func(Handler) http.HandlerFunc) {
	for _, rt := range s.Routes() {
		mux.HandleFunc(rt.Pattern, auth(rt.Handler))
	}
}

// counted counts the body bytes h reads and writes (Relayed) and maps the
// service's errors to API errors.
func (s *Service) counted(h Handler) Handler {
	return func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
		if r.Body != nil {
			r.Body = &countingBody{ReadCloser: r.Body, n: &s.reqBytes, m: s.m.apiBytes.WithLabelValues("in")}
		}
		w.Header().Set("Cache-Control", "no-store") // answers carry presigned URLs
		cw := &countingWriter{ResponseWriter: w, n: &s.respBytes}
		err := h(cw, r, clinic)
		s.m.apiBytes.WithLabelValues("out").Add(float64(cw.written))
		return apiError(err)
	}
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
	m interface{ Add(float64) }
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	b.m.Add(float64(n))
	return n, err
}

type countingWriter struct {
	http.ResponseWriter
	n       *atomic.Int64
	written int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	w.written += int64(n)
	return n, err
}

func (s *Service) handleBegin(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req filekey.BeginRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	resp, err := s.BeginUpload(r.Context(), clinic, r.PathValue("sha256"), req.Size, req.ContentType)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Service) handleAbort(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	f, err := s.Abort(r.Context(), clinic, r.PathValue("sha256"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, f)
	return nil
}

func (s *Service) handlePartURLs(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req filekey.PartURLsRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	resp, err := s.PartURLs(r.Context(), clinic, r.PathValue("sha256"), req.Parts)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Service) handleParts(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	resp, err := s.ListParts(r.Context(), clinic, r.PathValue("sha256"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Service) handleComplete(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	f, err := s.Complete(r.Context(), clinic, r.PathValue("sha256"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, f)
	return nil
}

func (s *Service) handleStat(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	stat := s.Stat
	if r.URL.Query().Get("check") == "true" {
		stat = s.Check // verify's sweep: ask S3 too
	}
	f, err := stat(r.Context(), clinic, r.PathValue("sha256"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, f)
	return nil
}

func (s *Service) handleCheck(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req filekey.CheckRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	files, err := s.CheckMany(r.Context(), clinic, req.SHA256)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, filekey.CheckResponse{Files: files})
	return nil
}

func (s *Service) handleDownload(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	resp, err := s.DownloadURL(r.Context(), clinic, r.PathValue("sha256"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}
