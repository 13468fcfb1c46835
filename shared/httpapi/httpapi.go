// Package httpapi gives the three scsync servers one way to speak HTTP/JSON:
// errors as {"code","message"} with a stable code, strict request decoding,
// /healthz and /readyz, and middleware that turns a panic into a 500 instead
// of a crash.
package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Error is an API error with a stable machine-readable Code, a human Message
// and the HTTP Status it is served with.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Holder names who holds a record (code locked).
	Holder any `json:"holder,omitempty"`
	// Options lists what the client may do next (code lock_unavailable:
	// edit_anyway, view_only).
	Options []string `json:"options,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(status int, code, format string, a ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// Stable codes shared by every server.
const (
	CodeBadRequest    = "bad_request"
	CodeNotFound      = "not_found"
	CodeUnauthorized  = "unauthorized"
	CodeForbidden     = "forbidden"
	CodeConflict      = "conflict"
	CodeInternal      = "internal"
	CodeUnavailable   = "unavailable"
	CodeTooLarge      = "too_large"
	CodeInvalidRecord = "invalid_record"
)

// MaxBody bounds a request body.
const MaxBody = 1 << 20

// WriteJSON writes v with status.
//
// v is encoded first, into a pooled buffer, and sent with its
// Content-Length in one write: no encoder allocated per answer, no chunked
// encoding for answers over net/http's 2 KB buffer, and a value that cannot
// be encoded answers 500 instead of a status already sent with a cut body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	buf := answers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 { // let an unusually large one go
			buf.Reset()
			answers.Put(buf)
		}
	}()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		buf.Reset()
		status = http.StatusInternalServerError
		buf.WriteString(`{"code":"` + CodeInternal + `","message":"internal error; see the server log"}` + "\n")
	}
	WriteJSONBody(w, status, buf.Bytes())
}

// WriteJSONBody answers status with b, JSON its caller encoded already (as
// WriteJSON does: a trailing newline, as json.Encoder writes), with its
// Content-Type and Content-Length, in one write.
func WriteJSONBody(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// jsonType is the Content-Type of every answer; net/http only reads it.
var jsonType = []string{"application/json"}

var answers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// WriteError writes err as JSON. An *Error keeps its status and code; any
// other error is an internal error whose text is logged, not shown.
func WriteError(w http.ResponseWriter, log *slog.Logger, err error) {
	var e *Error
	if !errors.As(err, &e) {
		if log != nil {
			log.Error("request failed", "err", err)
		}
		e = &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error; see the server log"}
	}
	WriteJSON(w, e.Status, e)
}

// Decode reads a JSON body into v strictly: unknown fields, trailing data and
// bodies over MaxBody are errors with code bad_request or too_large.
func Decode(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeFrom(http.MaxBytesReader(w, r.Body, MaxBody), v)
}

// decodeFrom is Decode of the body read from body (bounded by MaxBody).
func decodeFrom(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body over %d bytes", MaxBody)
		}
		if errors.Is(err, io.EOF) {
			return Errorf(http.StatusBadRequest, CodeBadRequest, "request body is empty")
		}
		return Errorf(http.StatusBadRequest, CodeBadRequest, "invalid JSON body: %v", err)
	}
	if dec.More() {
		return Errorf(http.StatusBadRequest, CodeBadRequest, "trailing data after the JSON body")
	}
	return nil
}

// Recover turns a handler panic into a JSON 500 and logs it.
func Recover(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(p)
				}
				log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
				WriteError(w, nil, Errorf(http.StatusInternalServerError, CodeInternal, "internal error; see the server log"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// NewServer returns an http.Server with sane timeouts for handler h.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
}
