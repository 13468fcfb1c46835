package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
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
// net/http offered HTTP/2), and a request's context ends neither when its
// client goes away nor when its handler returns (each Redis call has its
// own timeout).

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
		// r's context is context.Background (r.Context() of a request
		// without one): not ctx itself, whose Done is not the context
		// package's own, so that every context derived from it (each Redis
		// call's timeout) would cost a goroutine; and not a cancelable one
		// ending with the handler, as net/http's, which cost each Redis
		// call's timeout a registration with it: lockd's handlers start
		// nothing that outlives them.
		x := exchanges.Get().(*exchange)
		x.w = responseWriter{ctx: ctx, header: x.w.header}
		x.body = bodyReader{r: r.Body, size: r.ContentLength}
		r.Body = &x.body
		h.ServeHTTP(&x.w, r)
		x.w.finish()
		if x.body.unread() {
			// Refused unread: if fasthttp closes the connection rather
			// than drain the rest, the client must still get the answer.
			markLinger(ctx.Conn())
		}
		x.release()
	}
}

// exchange is what serving one request needs besides the request itself,
// kept for the next request (nothing of it outlives the handler).
type exchange struct {
	w    responseWriter
	body bodyReader
}

var exchanges = sync.Pool{New: func() any { return &exchange{w: responseWriter{header: http.Header{}}} }}

func (x *exchange) release() {
	clear(x.w.header)
	x.w = responseWriter{header: x.w.header}
	x.body = bodyReader{}
	exchanges.Put(x)
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
		Header:     header(&ctx.Request.Header),
		Host:       string(ctx.Host()),
		RemoteAddr: remoteAddr(ctx),
		RequestURI: uri,
		TLS:        ctx.TLSConnectionState(),
	}
	if !ctx.Request.Header.IsHTTP11() {
		r.Proto, r.ProtoMinor = "HTTP/1.0", 0
	}
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

// maxFields is how many fields' names and lengths header keeps on its
// stack; a request with more costs it two allocations more.
const maxFields = 32

// header is h as net/http has a request's header: canonical keys, each
// field's values in order, no Host (it is the request's Host). The values
// share one string and one []string (a key's first value has capacity 1,
// so adding to it copies), and the usual keys are constants, where adding
// each field as it came cost three allocations.
func header(h *fasthttp.RequestHeader) http.Header {
	n, size := 0, 0
	for _, v := range h.All() {
		n++
		size += len(v)
	}
	var (
		b    strings.Builder
		lens [maxFields]int
		keys [maxFields]string
	)
	b.Grow(size)
	lensOf, keysOf := lens[:0], keys[:0]
	if n > maxFields {
		lensOf, keysOf = make([]int, 0, n), make([]string, 0, n)
	}
	for k, v := range h.All() {
		if len(lensOf) == n {
			break // cannot happen: All yields the same fields again
		}
		b.Write(v)
		lensOf = append(lensOf, len(v))
		keysOf = append(keysOf, headerKey(k))
	}
	all := b.String()
	vals := make([]string, len(lensOf))
	hdr := make(http.Header, len(lensOf))
	off := 0
	for i, key := range keysOf {
		v := all[off : off+lensOf[i]]
		off += lensOf[i]
		if key == "Host" {
			continue // r.Host, as net/http has it
		}
		if prev, ok := hdr[key]; ok {
			hdr[key] = append(prev, v)
			continue
		}
		vals[i] = v
		hdr[key] = vals[i : i+1 : i+1]
	}
	return hdr
}

// headerKey is the canonical form of a field's name, without allocating
// for the names lockd's clients send.
func headerKey(k []byte) string {
	switch string(k) {
	case "Host":
		return "Host"
	case "Content-Length":
		return "Content-Length"
	case "Content-Type":
		return "Content-Type"
	case "User-Agent":
		return "User-Agent"
	case "Authorization":
		return "Authorization"
	case "Accept":
		return "Accept"
	case "Accept-Encoding":
		return "Accept-Encoding"
	case "Connection":
		return "Connection"
	}
	return http.CanonicalHeaderKey(string(k))
}

// remoteAddr is the client's address as net/http has it, from the
// connection's copy made once at accept.
func remoteAddr(ctx *fasthttp.RequestCtx) string {
	for c := ctx.Conn(); c != nil; {
		switch v := c.(type) {
		case *lingerConn:
			if v.remote != "" {
				return v.remote
			}
			c = nil
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			c = nil
		}
	}
	return ctx.RemoteAddr().String()
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
