package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The inline transport. net/http's Transport hands each request to two
// goroutines of its connection: one writes it, the other reads the answer
// and passes it to the caller, who hands the connection back once the body
// is read. Each hand-off may wake a thread, and on a busy machine wait for
// a core. A lone lock call pays them on every call: in the lock benchmark
// they were about a third of its latency. The inline transport writes the
// request and reads the answer on the calling goroutine, over a pool of
// kept HTTP/1.1 connections, with net/http's own response parser
// (http.ReadResponse).
//
// A Client uses it when its *http.Client is plain (an *http.Transport, or
// none: http.DefaultTransport; no proxy for lockd's address, no TLS dialer
// of its own, no cookie jar) and the platform lets alive look at a kept
// connection's socket (Linux and the other Unixes). Otherwise every call
// goes through the *http.Client, as before. It speaks HTTP/1.1 only, over
// TLS too (where net/http would negotiate HTTP/2), and does not follow
// redirects: an answer 3xx (a proxy's; lockd sends none) makes the call go
// again through the *http.Client, which does.

// inline is the inline transport of one Client.
type inline struct {
	host       string // Host header and dial address (host:port)
	prefix     string // base URL path, before each request's path
	tls        *tls.Config
	dial       func(ctx context.Context, network, addr string) (net.Conn, error)
	timeout    time.Duration // the *http.Client's Timeout (0: none)
	idleFor    time.Duration // a connection idle longer is closed, not reused
	maxIdle    int
	handshakeT time.Duration

	mu   sync.Mutex
	idle []*conn // most recently used last
}

// conn is a kept connection and its reader.
type conn struct {
	net.Conn
	br   *bufio.Reader
	used time.Time
}

// newInline returns the inline transport for baseURL over hc, or nil when
// hc is not plain enough for it (see above).
func newInline(baseURL string, hc *http.Client) *inline {
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	tr, ok := rt.(*http.Transport)
	if !ok || !canCheckConns || hc.Jar != nil || tr.DialTLSContext != nil || tr.DialTLS != nil || tr.Dial != nil { //nolint:staticcheck // Dial: a caller may still set it
		return nil
	}
	u, err := url.Parse(baseURL)
	if err != nil || u.User != nil || u.RawQuery != "" || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil
	}
	if tr.Proxy != nil {
		if p, err := tr.Proxy(&http.Request{Method: http.MethodPost, URL: u, Header: http.Header{}}); err != nil || p != nil {
			return nil
		}
	}
	in := &inline{
		host:       u.Host,
		prefix:     u.EscapedPath(),
		timeout:    hc.Timeout,
		idleFor:    tr.IdleConnTimeout,
		maxIdle:    tr.MaxIdleConnsPerHost,
		handshakeT: tr.TLSHandshakeTimeout,
		dial:       tr.DialContext,
	}
	if in.maxIdle <= 0 {
		in.maxIdle = http.DefaultMaxIdleConnsPerHost
	}
	if in.dial == nil {
		in.dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		in.host = net.JoinHostPort(u.Hostname(), port)
	}
	if u.Scheme == "https" {
		if tr.TLSClientConfig != nil {
			in.tls = tr.TLSClientConfig.Clone()
		} else {
			in.tls = &tls.Config{}
		}
		if in.tls.ServerName == "" {
			in.tls.ServerName = u.Hostname()
		}
		in.tls.NextProtos = []string{"http/1.1"}
	}
	return in
}

// errRedirect is a 3xx answer: the caller sends the call again through its
// *http.Client.
var errRedirect = errors.New("lockd: redirected")

// roundTrip sends one request (body may be nil) and reads the answer's
// body into ans (at most maxAnswer bytes). It returns the status.
func (in *inline) roundTrip(ctx context.Context, method, path string, auth string, body []byte, ans io.ReaderFrom) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// The *http.Client's timeout is a deadline on the connection, not a
	// context of its own: a context with a timer, and the caller giving
	// up registered with it, cost a lone call more than its answer's
	// head.
	dl, _ := ctx.Deadline()
	if in.timeout > 0 {
		if t := time.Now().Add(in.timeout); dl.IsZero() || t.Before(dl) {
			dl = t
		}
	}
	req := in.request(method, path, auth, body)
	defer putReqBuf(req)
	for {
		c, reused, err := in.get(ctx, dl)
		if err != nil {
			return 0, err
		}
		status, keep, written, err := in.exchange(ctx, dl, c, *req, ans)
		if err == nil {
			if keep {
				in.put(c)
			} else {
				_ = c.Close()
			}
			if status >= 300 && status < 400 {
				return 0, errRedirect
			}
			return status, nil
		}
		_ = c.Close()
		// A kept connection that the server had closed before the
		// request went out: nothing reached lockd, so try a new one (as
		// net/http's Transport does). Once anything was written, the call
		// may have run: not retried.
		if !reused || written || ctx.Err() != nil || passed(dl) {
			return 0, err
		}
	}
}

// passed reports whether the deadline dl (zero: none) has passed.
func passed(dl time.Time) bool { return !dl.IsZero() && !time.Now().Before(dl) }

// request is the HTTP/1.1 request (head and body) in a pooled buffer.
func (in *inline) request(method, path, auth string, body []byte) *[]byte {
	b := getReqBuf()
	r := append(*b, method...)
	r = append(r, ' ')
	r = append(r, in.prefix...)
	r = append(r, path...)
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, in.host...)
	r = append(r, "\r\nUser-Agent: scsync-lockd-client\r\nAuthorization: "...)
	r = append(r, auth...)
	r = append(r, "\r\nAccept: application/json\r\n"...)
	if body != nil {
		r = append(r, "Content-Type: application/json\r\nContent-Length: "...)
		r = strconv.AppendInt(r, int64(len(body)), 10)
		r = append(r, "\r\n"...)
	}
	r = append(r, "\r\n"...)
	r = append(r, body...)
	*b = r
	return b
}

// exchange writes req on c and reads the answer. keep says whether c may
// serve another request; written whether any byte of req went out.
func (in *inline) exchange(ctx context.Context, dl time.Time, c *conn, req []byte, ans io.ReaderFrom) (status int, keep, written bool, err error) {
	if err := c.SetDeadline(dl); err != nil {
		return 0, false, false, err
	}
	// The caller giving up interrupts the exchange at once. Should that
	// come too late to stop (the exchange ended meanwhile), the connection
	// is not kept: the deadline may yet be set on it. A context that
	// cannot end (context.Background) needs no watching.
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
		defer func() {
			if !stop() {
				keep = false
			}
		}()
	}
	n, err := c.Write(req)
	if err != nil {
		return 0, false, n > 0, ctxErr(ctx, dl, err)
	}
	if _, err := c.br.Peek(1); err != nil { // the answer's first bytes
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // as http.ReadResponse has it
		}
		return 0, false, true, ctxErr(ctx, dl, err)
	}
	if h, ok := plainHead(c.br); ok {
		_, _ = c.br.Discard(h.size)
		n, err := ans.ReadFrom(io.LimitReader(c.br, h.bodyLen))
		if err == nil && n < h.bodyLen {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, false, true, ctxErr(ctx, dl, err)
		}
		return h.status, !h.close && c.br.Buffered() == 0, true, nil
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, false, true, ctxErr(ctx, dl, err)
	}
	_, err = ans.ReadFrom(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, false, true, ctxErr(ctx, dl, err)
	}
	// Reusable only when the answer was read to its end and nothing
	// follows it.
	var one [1]byte
	rest, _ := resp.Body.Read(one[:])
	keep = !resp.Close && rest == 0 && c.br.Buffered() == 0
	_ = resp.Body.Close()
	return resp.StatusCode, keep, true, nil
}

// head is what the inline transport needs of an answer's head.
type head struct {
	size    int // bytes, up to and with the empty line
	status  int
	bodyLen int64
	close   bool // Connection: close
}

// plainHead reads the head of the answer buffered in br, without taking
// it, when it is in the plain form lockd writes: all of it buffered (lockd
// writes each answer at once), "HTTP/1.1 ddd", CRLF line ends, one
// Content-Length of at most maxAnswer, no Transfer-Encoding, a Connection
// header if any of "close" or "keep-alive", no 1xx, 204 or 304 status, and
// field names and values net/http accepts. Anything else (ok false) is
// left to http.ReadResponse, which reads it as before: parsing the head by
// hand spares its allocations (a header map and a string per field), about
// a tenth of the client's CPU for a lone call.
func plainHead(br *bufio.Reader) (h head, ok bool) {
	b, _ := br.Peek(br.Buffered())
	const proto = "HTTP/1.1 "
	if len(b) < len(proto)+4 || string(b[:len(proto)]) != proto {
		return h, false
	}
	for _, d := range b[len(proto) : len(proto)+3] {
		if d < '0' || d > '9' {
			return h, false
		}
		h.status = h.status*10 + int(d-'0')
	}
	if h.status < 200 || h.status == http.StatusNoContent || h.status == http.StatusNotModified {
		return h, false
	}
	if c := b[len(proto)+3]; c != ' ' && c != '\r' {
		return h, false
	}
	i := bytes.Index(b, []byte("\r\n")) // the status line's end; its reason is not read
	if i < 0 {
		return h, false
	}
	for _, c := range b[len(proto)+3 : i] {
		if c == '\n' {
			return h, false
		}
	}
	lenSeen := false
	for i += 2; ; {
		end := bytes.Index(b[i:], []byte("\r\n"))
		if end < 0 {
			return h, false
		}
		line := b[i : i+end]
		i += end + 2
		if len(line) == 0 {
			break
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found || len(name) == 0 || !plainValue(value) {
			return h, false
		}
		for _, c := range name {
			if !tokenByte(c) {
				return h, false
			}
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if lenSeen || len(value) == 0 || len(value) > 7 {
				return h, false
			}
			for _, d := range value {
				if d < '0' || d > '9' {
					return h, false
				}
				h.bodyLen = h.bodyLen*10 + int64(d-'0')
			}
			lenSeen = true
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return h, false
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				h.close = true
			case !bytes.EqualFold(value, []byte("keep-alive")):
				return h, false
			}
		}
	}
	if !lenSeen || h.bodyLen > maxAnswer {
		return h, false
	}
	h.size = i
	return h, true
}

// plainValue reports whether a field's value holds no control byte but
// tabs (and so no line end).
func plainValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// tokenByte reports whether c may be in a field's name (RFC 9110 tchar).
func tokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c < 0x80 && strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// aLongTimeAgo is a deadline that has passed: it interrupts I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// ctxErr is ctx's error when it ended (the caller gave up), or
// context.DeadlineExceeded when the deadline dl (the caller's or the
// client's timeout) passed, else err.
func ctxErr(ctx context.Context, dl time.Time, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) && passed(dl) {
		return context.DeadlineExceeded // the context's timer has not fired yet, or there is none
	}
	return err
}

// get returns a kept connection that is still open, or a new one.
func (in *inline) get(ctx context.Context, dl time.Time) (c *conn, reused bool, err error) {
	now := time.Now()
	in.mu.Lock()
	for len(in.idle) > 0 {
		c = in.idle[len(in.idle)-1]
		in.idle[len(in.idle)-1] = nil
		in.idle = in.idle[:len(in.idle)-1]
		in.mu.Unlock()
		if (in.idleFor <= 0 || now.Sub(c.used) < in.idleFor) && alive(c.Conn) {
			return c, true, nil
		}
		_ = c.Close()
		in.mu.Lock()
	}
	in.mu.Unlock()
	c, err = in.dialConn(ctx, dl)
	return c, false, err
}

func (in *inline) dialConn(ctx context.Context, dl time.Time) (*conn, error) {
	if !dl.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	nc, err := in.dial(ctx, "tcp", in.host)
	if err != nil {
		return nil, ctxErr(ctx, dl, err)
	}
	if in.tls != nil {
		hctx := ctx
		if in.handshakeT > 0 {
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeout(ctx, in.handshakeT)
			defer cancel()
		}
		tc := tls.Client(nc, in.tls)
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = nc.Close()
			return nil, ctxErr(ctx, dl, fmt.Errorf("tls handshake: %w", err))
		}
		nc = tc
	}
	return &conn{Conn: nc, br: bufio.NewReaderSize(nc, 4096)}, nil
}

// put keeps c for the next request, unless maxIdle are kept already.
func (in *inline) put(c *conn) {
	c.used = time.Now()
	in.mu.Lock()
	if len(in.idle) < in.maxIdle {
		in.idle = append(in.idle, c)
		c = nil
	}
	in.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// closeIdle closes every kept connection.
func (in *inline) closeIdle() {
	in.mu.Lock()
	idle := in.idle
	in.idle = nil
	in.mu.Unlock()
	for _, c := range idle {
		_ = c.Close()
	}
}

var reqBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getReqBuf() *[]byte { return reqBufs.Get().(*[]byte) }

func putReqBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return
	}
	*b = (*b)[:0]
	reqBufs.Put(b)
}
