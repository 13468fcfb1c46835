package client

import (
	"bufio"
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
	if in.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, in.timeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	req := in.request(method, path, auth, body)
	defer putReqBuf(req)
	for {
		c, reused, err := in.get(ctx)
		if err != nil {
			return 0, err
		}
		status, keep, written, err := in.exchange(ctx, c, *req, ans)
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
		if !reused || written || ctx.Err() != nil {
			return 0, err
		}
	}
}

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
func (in *inline) exchange(ctx context.Context, c *conn, req []byte, ans io.ReaderFrom) (status int, keep, written bool, err error) {
	dl, _ := ctx.Deadline()
	if err := c.SetDeadline(dl); err != nil {
		return 0, false, false, err
	}
	// The caller giving up interrupts the exchange at once. Should that
	// come too late to stop (the exchange ended meanwhile), the connection
	// is not kept: the deadline may yet be set on it.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
	defer func() {
		if !stop() {
			keep = false
		}
	}()
	n, err := c.Write(req)
	if err != nil {
		return 0, false, n > 0, ctxErr(ctx, err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, false, true, ctxErr(ctx, err)
	}
	_, err = ans.ReadFrom(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, false, true, ctxErr(ctx, err)
	}
	// Reusable only when the answer was read to its end and nothing
	// follows it.
	var one [1]byte
	rest, _ := resp.Body.Read(one[:])
	keep = !resp.Close && rest == 0 && c.br.Buffered() == 0
	_ = resp.Body.Close()
	return resp.StatusCode, keep, true, nil
}

// aLongTimeAgo is a deadline that has passed: it interrupts I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// ctxErr is ctx's error when it ended (the caller gave up, or the client's
// timeout passed), else err.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		return context.DeadlineExceeded // the context's timer has not fired yet
	}
	return err
}

// get returns a kept connection that is still open, or a new one.
func (in *inline) get(ctx context.Context) (c *conn, reused bool, err error) {
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
	c, err = in.dialConn(ctx)
	return c, false, err
}

func (in *inline) dialConn(ctx context.Context) (*conn, error) {
	nc, err := in.dial(ctx, "tcp", in.host)
	if err != nil {
		return nil, ctxErr(ctx, err)
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
			return nil, ctxErr(ctx, fmt.Errorf("tls handshake: %w", err))
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
