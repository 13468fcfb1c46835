// Package client is the Go client of lockd, the scsync edit-lock service:
// acquire, renew, release, inspect and force-release locks, and lease cloud
// node ids. Failures are typed: match them with errors.Is against ErrHeld,
// ErrExpired, ErrNotYours, ErrNotHeld, ErrUnavailable, …
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/scsync/scsync/lockd/internal/lockjson"
	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
)

// DefaultTimeout bounds a request when New is given no *http.Client.
const DefaultTimeout = 10 * time.Second

// MaxIdleConns is how many idle connections to lockd NewTransport keeps.
// Every acquire, renew and release is a short request, so a caller with n
// goroutines locking at once needs n connections: with net/http's default
// of 2 idle connections per host, the third concurrent caller opens (and
// then closes) a connection on every request, which costs more than the
// request itself. 64 covers an sc-cloud node's editors comfortably; a
// connection beyond it is still made, just not kept.
const MaxIdleConns = 64

// DefaultTransport is the transport of the clients New makes without an
// *http.Client: one pool of connections per process, as net/http's own
// DefaultTransport, but keeping MaxIdleConns of them per host.
var DefaultTransport = NewTransport(nil)

// NewTransport returns the HTTP transport a lockd client should use: the
// default transport's dialer, proxy and timeouts, with tlsConfig (may be
// nil) and MaxIdleConns idle connections kept per host.
func NewTransport(tlsConfig *tls.Config) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConfig != nil {
		tr.TLSClientConfig = tlsConfig.Clone()
	}
	tr.MaxIdleConns = MaxIdleConns
	tr.MaxIdleConnsPerHost = MaxIdleConns
	tr.IdleConnTimeout = 90 * time.Second
	return tr
}

// Client talks to one lockd address (usually a load balancer in front of the
// replicas). It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
	auth  []string // the Authorization header's value
	in    *inline  // nil: every call goes through hc
	b     batcher
}

// New returns a client of the lockd at baseURL ("https://lockd.example:8090")
// that authenticates with the bearer token. hc may be nil: the client then
// uses DefaultTransport and DefaultTimeout. A caller passing its own client
// should give it NewTransport's pool (or one as large as its concurrency).
func New(baseURL, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Transport: DefaultTransport, Timeout: DefaultTimeout}
	}
	base := strings.TrimRight(baseURL, "/")
	return &Client{base: base, token: token, hc: hc, auth: []string{"Bearer " + token}, in: newInline(base, hc)}
}

// CloseIdleConnections closes the connections the client keeps for its
// next calls (its own and those of its *http.Client).
func (c *Client) CloseIdleConnections() {
	if c.in != nil {
		c.in.closeIdle()
	}
	c.hc.CloseIdleConnections()
}

// Acquire takes the lock on req.Resource for req.Holder. If someone else
// holds it the error is ErrHeld, and HeldBy(err) names them.
func (c *Client) Acquire(ctx context.Context, req lockapi.AcquireRequest) (lockapi.Grant, error) {
	var g lockapi.Grant
	err := c.lockOp(ctx, lockapi.BatchOp{Acquire: &req}, &g)
	return g, err
}

// Renew extends a granted lock (see Grant.RenewRequest).
func (c *Client) Renew(ctx context.Context, req lockapi.RenewRequest) (lockapi.Renewal, error) {
	var r lockapi.Renewal
	err := c.lockOp(ctx, lockapi.BatchOp{Renew: &req}, &r)
	return r, err
}

// Release frees a granted lock (see Grant.ReleaseRequest).
func (c *Client) Release(ctx context.Context, req lockapi.ReleaseRequest) error {
	return c.lockOp(ctx, lockapi.BatchOp{Release: &req}, &lockapi.Released{})
}

// Inspect returns who holds the lock on resource. When nobody does, the
// error is ErrNotHeld and the returned status carries only LastToken.
func (c *Client) Inspect(ctx context.Context, clinic ids.ID, resource string) (lockapi.Status, error) {
	var st lockapi.Status
	segs := strings.Split(resource, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	err := c.do(ctx, http.MethodGet, "/v1/locks/"+clinic.String()+"/"+strings.Join(segs, "/"), nil, &st)
	var e *Error
	if errors.As(err, &e) && e.Code == lockapi.CodeNotHeld {
		return lockapi.Status{Lock: lockapi.Lock{Resource: resource}, LastToken: e.LastToken}, err
	}
	return st, err
}

// ForceRelease removes the lock whoever holds it (admin token only) and
// returns the lock it removed.
func (c *Client) ForceRelease(ctx context.Context, clinic ids.ID, resource string) (lockapi.Lock, error) {
	var r lockapi.Released
	if err := c.do(ctx, http.MethodPost, "/v1/admin/locks/force-release", lockapi.ForceReleaseRequest{Clinic: clinic, Resource: resource}, &r); err != nil {
		return lockapi.Lock{}, err
	}
	if r.Lock == nil {
		return lockapi.Lock{}, nil
	}
	return *r.Lock, nil
}

// LeaseNode leases a cloud node id for owner (service token). Renew it every
// TTLMillis/3 and stop minting ids once ExpiresAt passes without a renewal.
func (c *Client) LeaseNode(ctx context.Context, owner string) (lockapi.NodeLease, error) {
	var l lockapi.NodeLease
	return l, c.do(ctx, http.MethodPost, "/v1/nodes/lease", lockapi.NodeLeaseRequest{Owner: owner}, &l)
}

// RenewNode extends a node lease. ErrExpired means the id is lost: stop
// minting ids with it at once.
func (c *Client) RenewNode(ctx context.Context, node int64, secret string) (lockapi.NodeLease, error) {
	var l lockapi.NodeLease
	return l, c.do(ctx, http.MethodPost, "/v1/nodes/renew", lockapi.NodeRequest{Node: node, Secret: secret}, &l)
}

// ReleaseNode ends a node lease; the id stays quarantined for a while.
func (c *Client) ReleaseNode(ctx context.Context, node int64, secret string) (lockapi.NodeReleased, error) {
	var r lockapi.NodeReleased
	return r, c.do(ctx, http.MethodPost, "/v1/nodes/release", lockapi.NodeRequest{Node: node, Secret: secret}, &r)
}

// maxAnswer bounds the answer read from lockd.
const maxAnswer = 1 << 20

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		// Not from a pool: net/http's transport may still read a request
		// body after Do returns.
		b, ok := lockjson.Append(make([]byte, 0, 256), in)
		if !ok {
			var err error
			if b, err = json.Marshal(in); err != nil {
				return fmt.Errorf("lockd: encode request: %w", err)
			}
		}
		body = b
	}
	ans := lockjson.Buffer()
	defer lockjson.PutBuffer(ans)
	status, err := -1, errRedirect
	if c.in != nil {
		status, err = c.in.roundTrip(ctx, method, path, c.auth[0], body, ans)
		if errors.Is(err, errRedirect) {
			ans.Reset()
		}
	}
	if errors.Is(err, errRedirect) {
		status, err = c.viaHTTPClient(ctx, method, path, body, ans)
	}
	if err != nil {
		return unreachable(ctx, err)
	}
	b := ans.Bytes()
	if status == http.StatusOK {
		if lockjson.Decode(b, out) {
			return nil
		}
		reflect.ValueOf(out).Elem().SetZero() // what Decode began
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%w: undecodable answer: %w", ErrUnavailable, err)
		}
		return nil
	}
	var a lockapi.Error
	if err := json.Unmarshal(b, &a); err != nil || a.Code == "" {
		// Not lockd speaking (a proxy, a load balancer): keep the status.
		return &Error{Status: status, Message: strings.TrimSpace(http.StatusText(status) + " " + string(b[:min(len(b), 200)]))}
	}
	return errorOf(status, a)
}

// viaHTTPClient sends a request through the *http.Client and reads the answer's
// body into ans; it returns the status.
func (c *Client) viaHTTPClient(ctx context.Context, method, path string, body []byte, ans *bytes.Buffer) (int, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return 0, err
	}
	// Canonical keys set directly: Header.Set would canonicalize each.
	req.Header = http.Header{"Authorization": c.auth, "Accept": jsonType}
	if body != nil {
		req.Header["Content-Type"] = jsonType
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := ans.ReadFrom(io.LimitReader(resp.Body, maxAnswer)); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// jsonType is the value of Accept and Content-Type; net/http only reads
// header values, so every request may share it.
var jsonType = []string{"application/json"}

// errorOf is the *Error of lockd's error answer a with status.
func errorOf(status int, a lockapi.Error) *Error {
	return &Error{
		Status:     status,
		Code:       a.Code,
		Message:    a.Message,
		Lock:       a.Lock,
		LastToken:  a.LastToken,
		RetryAfter: time.Duration(a.RetryAfterMillis) * time.Millisecond,
	}
}

// unreachable wraps a transport failure as ErrUnavailable, unless the
// caller itself gave up (canceled its context).
func unreachable(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("lockd: %w", err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// SetClinicToken registers the SHA-256 (hex) of a clinic's new lockd token,
// replacing its previous one (service token).
func (c *Client) SetClinicToken(ctx context.Context, clinic ids.ID, sha256Hex string) error {
	return c.do(ctx, http.MethodPut, "/v1/clinic-tokens/"+clinic.String(), lockapi.ClinicTokenRequest{SHA256: sha256Hex}, &lockapi.ClinicToken{})
}

// DeleteClinicToken revokes a clinic's lockd token (service token).
func (c *Client) DeleteClinicToken(ctx context.Context, clinic ids.ID) error {
	return c.do(ctx, http.MethodDelete, "/v1/clinic-tokens/"+clinic.String(), nil, &lockapi.ClinicToken{})
}

// ClinicTokensSynced reports whether lockd holds the clinic token set the
// cloud put (false after its Redis lost its data).
func (c *Client) ClinicTokensSynced(ctx context.Context) (bool, error) {
	var st lockapi.ClinicTokensState
	err := c.do(ctx, http.MethodGet, "/v1/clinic-tokens", nil, &st)
	return st.Synced, err
}

// PutClinicTokens puts back the whole clinic token set.
func (c *Client) PutClinicTokens(ctx context.Context, ts lockapi.ClinicTokens) error {
	return c.do(ctx, http.MethodPut, "/v1/clinic-tokens", ts, &lockapi.ClinicTokensState{})
}
