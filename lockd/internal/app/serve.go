package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/httpapi"
)

// lockd serves its net/http handlers from fasthttp's server, which reads a
// request, runs its handler and writes the answer on the connection's own
// goroutine. net/http's server also starts a goroutine per request (its
// background read, which watches for the client going away) and stops it
// after the answer: on a small machine, where the caller, lockd and Redis
// take turns on the cores, waking a second thread for it was a fifth to a
// quarter of a lone lock call (docs/performance.md). The handlers are the
// same: each request is handed to them as an *http.Request, synchronously
// (fasthttp's own adaptor runs each in a goroutine of its own, for Flush
// and Hijack, which lockd's handlers do not use), and their answer is sent
// as they wrote it. What differs: HTTP/1.1 only (over TLS too, where
// net/http offered HTTP/2), and a request's context does not end when its
// client goes away (each Redis call has its own timeout).

// newServer returns the server of h.
func newServer(h http.Handler, log *slog.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               serveHTTP(h),
		ErrorHandler:          requestError,
		Logger:                fastLogger{log},
		ReadTimeout:           60 * time.Second, // as httpapi.NewServer's ReadTimeout
		IdleTimeout:           120 * time.Second,
		MaxRequestBodySize:    httpapi.MaxBody + 1, // more is streamed: the handlers refuse it as before
		StreamRequestBody:     true,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		// A goroutine without a connection ends after this; so does the
		// pool's cleaner once the server stopped (default 10 s).
		MaxIdleWorkerDuration: time.Second,
		// Also the bound on a request's head (net/http's is 1 MB):
		// room for what proxies add.
		ReadBufferSize: 64 << 10,
	}
}

// serveHTTP serves h's answer to each request.
func serveHTTP(h http.Handler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		r, err := request(ctx)
		if err != nil {
			writeError(ctx, http.StatusBadRequest, httpapi.CodeBadRequest, "malformed request target")
			return
		}
		// Not ctx itself: a context whose Done is not the context
		// package's own costs every context derived from it (each Redis
		// call's timeout) a goroutine. As net/http's, it ends when the
		// handler returns.
		rctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := responseWriter{ctx: ctx, header: http.Header{}}
		body := &bodyReader{r: r.Body, size: r.ContentLength}
		r.Body = body
		h.ServeHTTP(&w, r.WithContext(rctx))
		w.finish()
		if body.unread() {
			// Refused unread: if fasthttp closes the connection rather
			// than drain the rest, the client must still get the answer.
			markLinger(ctx.Conn())
		}
	}
}

// bodyReader tells whether a request's body was read to its end.
type bodyReader struct {
	r    io.ReadCloser
	size int64 // -1: chunked
	read int64
	eof  bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.r.Close() }

func (b *bodyReader) unread() bool {
	return !b.eof && (b.size < 0 || b.read < b.size)
}

// request is ctx's request for a net/http handler. Every string is a
// copy: fasthttp reuses its buffers once the handler returns.
func request(ctx *fasthttp.RequestCtx) (*http.Request, error) {
	uri := string(ctx.RequestURI())
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, err
	}
	r := &http.Request{
		Method:     string(ctx.Method()),
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header, 8),
		Host:       string(ctx.Host()),
		RemoteAddr: ctx.RemoteAddr().String(),
		RequestURI: uri,
		TLS:        ctx.TLSConnectionState(),
	}
	if !ctx.Request.Header.IsHTTP11() {
		r.Proto, r.ProtoMinor = "HTTP/1.0", 0
	}
	for k, v := range ctx.Request.Header.All() {
		r.Header.Add(string(k), string(v))
	}
	r.Header.Del("Host") // r.Host, as net/http has it
	r.ContentLength = int64(ctx.Request.Header.ContentLength())
	if s := ctx.RequestBodyStream(); s != nil {
		r.Body = io.NopCloser(s)
	} else {
		body := ctx.PostBody()
		r.ContentLength = int64(len(body))
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if r.ContentLength < 0 {
		r.ContentLength = -1 // chunked
	}
	return r, nil
}

// responseWriter collects a handler's answer into ctx's response.
type responseWriter struct {
	ctx    *fasthttp.RequestCtx
	header http.Header
	status int
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.ctx.Response.AppendBody(b)
	return len(b), nil
}

// finish sets the status and headers the handler wrote.
func (w *responseWriter) finish() {
	w.WriteHeader(http.StatusOK)
	resp := &w.ctx.Response
	resp.SetStatusCode(w.status)
	for k, vs := range w.header {
		if k == "Content-Length" {
			continue // fasthttp writes the body's own
		}
		for _, v := range vs {
			resp.Header.Add(k, v)
		}
	}
	if len(w.header["Content-Type"]) == 0 && len(resp.Body()) > 0 {
		resp.Header.SetContentType(http.DetectContentType(resp.Body())) // as net/http does
	}
}

// requestError answers a request fasthttp could not read, in JSON like
// every other answer.
func requestError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "request body over "+strconv.Itoa(httpapi.MaxBody)+" bytes")
	case errors.As(err, &small) || errors.Is(err, fasthttp.ErrSmallReadBuffer):
		writeError(ctx, http.StatusRequestHeaderFieldsTooLarge, httpapi.CodeBadRequest, "request head too large")
	default:
		writeError(ctx, http.StatusBadRequest, httpapi.CodeBadRequest, "malformed request")
	}
	ctx.SetConnectionClose()
	markLinger(ctx.Conn()) // the client may still be sending
}

func writeError(ctx *fasthttp.RequestCtx, status int, code, message string) {
	w := responseWriter{ctx: ctx, header: http.Header{}}
	httpapi.WriteJSON(&w, status, lockapi.Error{Code: code, Message: message})
	w.finish()
}

// fastLogger sends fasthttp's messages to lockd's log.
type fastLogger struct{ log *slog.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	l.log.Warn("http server", "detail", fmt.Sprintf(format, args...))
}
