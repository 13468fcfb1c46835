package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/scsync/scsync/shared/httpapi"
)

// Rule says who may call one route (one mux pattern).
type Rule struct {
	// Public routes need no credentials (health, metrics, login, static pages).
	Public bool
	// Min is the least role a person (or the service token) needs; RoleNone
	// keeps persons out.
	Min Role
	// Machine lets the clinic's machine token call the route.
	Machine bool
	// Audit, when set, is the action the audit log records for each call.
	Audit string
	// Enrolment routes may be called by a person who must still enrol a
	// second factor (Principal.MustEnrol): who-am-I, logout, enrolment.
	Enrolment bool
}

// Policy is the rule of every pattern a server serves.
type Policy map[string]Rule

// Authenticator finds the principal of a request: ErrNoCredentials when it
// carries none, ErrBadCredentials when they are wrong or expired.
type Authenticator func(r *http.Request) (Principal, error)

// Event is what the guard tells the audit log after an audited call.
type Event struct {
	Principal Principal
	Action    string
	// Collection and ID are the path's {collection} and {id} (or the id of
	// a created record).
	Collection, ID string
	// Path is the request's method and path (a refused call's only target:
	// its path values are not parsed yet).
	Path    string
	Remote  string
	Status  int
	Request *http.Request
}

// Guard wraps a server's router: a request reaches its handler only if the
// policy has a rule for the matched pattern and the caller satisfies it.
// A pattern without a rule is refused (fail closed), so a new route that
// nobody gave a rule cannot be reached.
type Guard struct {
	mux    *httpapi.Mux
	policy Policy
	authn  Authenticator
	audit  func(Event)
	log    *slog.Logger
}

// NewGuard returns a guard of mux.
func NewGuard(mux *httpapi.Mux, policy Policy, authn Authenticator, log *slog.Logger) *Guard {
	return &Guard{mux: mux, policy: policy, authn: authn, log: log}
}

// Handler is the mux's handler and pattern for r, so a middleware outside the
// guard (request metrics) can name the route: the guard serves a copy of the
// request, on which the mux records the pattern.
func (g *Guard) Handler(r *http.Request) (http.Handler, string) { return g.mux.Handler(r) }

// OnAudit sets the function told about every audited call (allowed or not).
func (g *Guard) OnAudit(f func(Event)) { g.audit = f }

// Policy is the guard's policy.
func (g *Guard) Policy() Policy { return g.policy }

// Mux is the guarded router.
func (g *Guard) Mux() *httpapi.Mux { return g.mux }

// Errors the guard answers with.
var (
	errUnauthenticated = httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "log in first (missing, unknown or expired credentials)")
	errForbidden       = httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "your role does not allow this")
	errNoPolicy        = httpapi.Errorf(http.StatusForbidden, "no_policy", "this route has no authorization rule")
	errCrossOrigin     = httpapi.Errorf(http.StatusForbidden, "cross_origin", "state-changing requests must come from the same origin")
	errNeedJSON        = httpapi.Errorf(http.StatusUnsupportedMediaType, "json_required", "the request body must be JSON (Content-Type: application/json)")
	errEnrolFirst      = httpapi.Errorf(http.StatusForbidden, "totp_enrolment_required", "enrol a second factor first (POST /v1/me/totp, then /v1/me/totp/confirm)")
)

// ServeHTTP checks the request against the policy, then serves it.
func (g *Guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, pattern := g.mux.Handler(r)
	if pattern == "" { // not found, wrong method, redirect: the mux answers
		g.mux.ServeHTTP(w, r)
		return
	}
	rule, ok := g.policy[pattern]
	if !ok {
		g.log.Error("route without an authorization rule refused", "pattern", pattern)
		httpapi.WriteError(w, g.log, errNoPolicy)
		return
	}
	if stateChanging(r.Method) {
		if err := SameOriginJSON(r); err != nil {
			httpapi.WriteError(w, g.log, err)
			return
		}
	}
	if rule.Public {
		g.mux.ServeHTTP(w, r)
		return
	}
	p, err := g.authn(r)
	if err != nil {
		if !errors.Is(err, ErrNoCredentials) && !errors.Is(err, ErrBadCredentials) {
			httpapi.WriteError(w, g.log, err)
			return
		}
		g.refused(w, r, rule, Principal{}, errUnauthenticated)
		return
	}
	if !Allowed(rule, p) {
		g.refused(w, r, rule, p, errForbidden)
		return
	}
	if p.MustEnrol && !rule.Enrolment {
		g.refused(w, r, rule, p, errEnrolFirst)
		return
	}
	r = r.WithContext(WithPrincipal(r.Context(), p))
	if rule.Audit == "" || g.audit == nil {
		g.mux.ServeHTTP(w, r)
		return
	}
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	slot := &auditSlot{ev: Event{Principal: p, Action: rule.Audit, Path: r.Method + " " + r.URL.Path, Remote: r.RemoteAddr}}
	r = r.WithContext(context.WithValue(r.Context(), auditSlotKey{}, slot))
	g.mux.ServeHTTP(rec, r)
	if slot.done {
		return // the handler wrote the entry in its write's own transaction
	}
	ev := Event{Principal: p, Action: rule.Audit, Collection: r.PathValue("collection"), ID: r.PathValue("id"),
		Path: r.Method + " " + r.URL.Path, Remote: r.RemoteAddr, Status: rec.status, Request: r}
	if ev.ID == "" && rec.status == http.StatusCreated {
		ev.ID = rec.createdID()
	}
	g.audit(ev)
}

// auditSlot is an audited request's pending entry (PendingAudit).
type auditSlot struct {
	ev   Event
	done bool
}

type auditSlotKey struct{}

// PendingAudit returns the audit event of the audited request ctx belongs
// to (principal, action, path, remote; the handler fills in the collection,
// id and status), for a handler that writes the entry in the same
// transaction as the change it records: the change and its entry then
// commit together, and cost one commit, not two. ok is false when the
// request is not audited. After that transaction committed the handler
// calls Audited, and the guard does not write the entry again.
func PendingAudit(ctx context.Context) (Event, bool) {
	slot, ok := ctx.Value(auditSlotKey{}).(*auditSlot)
	if !ok || slot.done {
		return Event{}, false
	}
	return slot.ev, true
}

// Audited tells the guard that the request's entry is written (see
// PendingAudit).
func Audited(ctx context.Context) {
	if slot, ok := ctx.Value(auditSlotKey{}).(*auditSlot); ok {
		slot.done = true
	}
}

func (g *Guard) refused(w http.ResponseWriter, r *http.Request, rule Rule, p Principal, e *httpapi.Error) {
	if rule.Audit != "" && g.audit != nil {
		g.audit(Event{Principal: p, Action: rule.Audit, Path: r.Method + " " + r.URL.Path, Remote: r.RemoteAddr, Status: e.Status, Request: r})
	}
	httpapi.WriteError(w, g.log, e)
}

// Allowed reports whether p may call a route of rule.
func Allowed(rule Rule, p Principal) bool {
	switch p.Kind {
	case KindOperator:
		return true
	case KindMachine:
		return rule.Machine
	case KindPerson, KindService:
		return rule.Min != RoleNone && p.Role >= rule.Min
	}
	return false
}

func stateChanging(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// SameOriginJSON is the CSRF check of a state-changing request: a browser
// says where a request comes from (Sec-Fetch-Site, Origin) and a foreign
// page cannot send a JSON body without a CORS preflight, which these servers
// never grant.
func SameOriginJSON(r *http.Request) error {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return errCrossOrigin
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return errCrossOrigin
		}
	}
	if r.ContentLength != 0 {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || (mt != "application/json" && mt != "application/x-ndjson" && !strings.HasSuffix(mt, "+json")) {
			return errNeedJSON
		}
	}
	return nil
}

// recorder keeps the status and the start of a created record's answer.
type recorder struct {
	http.ResponseWriter
	status int
	wrote  bool
	head   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	if r.status == http.StatusCreated && r.head.Len() < 4096 {
		r.head.Write(b[:min(len(b), 4096-r.head.Len())])
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) createdID() string {
	var v struct {
		ID json.RawMessage `json:"id"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.head.Bytes()))
	if dec.Decode(&v) != nil {
		// A truncated head: look for the id field's value by hand.
		s := r.head.String()
		if i := strings.Index(s, `"id":`); i >= 0 {
			rest := strings.TrimLeft(s[i+5:], `" `)
			if j := strings.IndexAny(rest, `",}`); j > 0 {
				return rest[:j]
			}
		}
		return ""
	}
	return strings.Trim(string(v.ID), `"`)
}

// RequestToken is the credential of r: the Authorization bearer token, the
// session cookie, or (for WebSockets, which cannot set headers) ?access_token=.
func RequestToken(r *http.Request) string {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(tok)
	}
	if c, err := r.Cookie(CookieName(r)); err == nil && c.Value != "" {
		return c.Value
	}
	if r.Method == http.MethodGet {
		return r.URL.Query().Get("access_token")
	}
	return ""
}

// CookieName is the session cookie of the viewer pages on the server r
// reached: browsers share cookies between the ports of one host, so a
// clinic and a cloud server on one machine (the demo) would overwrite each
// other's session under one name.
func CookieName(r *http.Request) string {
	b := []byte("scsync_session_" + r.Host)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// SetCookie gives the browser the session (HttpOnly, SameSite=Strict).
func SetCookie(w http.ResponseWriter, r *http.Request, token string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: CookieName(r), Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil, MaxAge: maxAge})
}
