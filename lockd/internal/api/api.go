// Package api is lockd's HTTP/JSON API: edit locks (acquire, renew, release,
// inspect, admin force-release) and cloud node id leases, behind bearer
// tokens. Every answer is JSON; errors carry a stable code (see lockapi).
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scsync/scsync/lockd/internal/config"
	"github.com/scsync/scsync/lockd/internal/store"
	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
)

// Options bound what callers may ask for.
type Options struct {
	DefaultTTL time.Duration // lock TTL when a request names none
	MinTTL     time.Duration
	MaxTTL     time.Duration
}

// Server serves the API. It holds no state of its own: every replica over
// the same Redis answers the same.
type Server struct {
	store *store.Store
	auth  auth
	opts  Options
	log   *slog.Logger
	m     *metrics
}

// New returns a Server; its metrics are registered on reg.
func New(st *store.Store, tokens config.Auth, opts Options, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	a, err := newAuth(tokens)
	if err != nil {
		return nil, err
	}
	m := newMetrics(reg)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "lockd",
		Name: "combined_scripts_total", Help: "Lock scripts that went to Redis in a pipeline with another request's, having queued while a call was in flight."},
		func() float64 { return float64(st.Combined()) }))
	return &Server{store: st, auth: a, opts: opts, log: log, m: m}, nil
}

// handler serves one operation for an authenticated caller and returns the
// body of a 200 answer or an error.
type handler func(w http.ResponseWriter, r *http.Request, p principal) (any, error)

// Register mounts the API on mux.
func (s *Server) Register(mux *http.ServeMux) {
	s.route(mux, "POST /v1/locks/acquire", "acquire", roleClinic, s.acquire)
	s.route(mux, "POST /v1/locks/renew", "renew", roleClinic, s.renew)
	s.route(mux, "POST /v1/locks/release", "release", roleClinic, s.release)
	s.route(mux, "POST /v1/locks/batch", "batch", roleClinic, s.batch)
	s.route(mux, "GET /v1/locks/{clinic}/{resource...}", "inspect", roleClinic, s.inspect)
	s.route(mux, "POST /v1/admin/locks/force-release", "force_release", roleAdmin, s.forceRelease)
	s.route(mux, "POST /v1/nodes/lease", "node_lease", roleService, s.leaseNode)
	s.route(mux, "POST /v1/nodes/renew", "node_renew", roleService, s.renewNode)
	s.route(mux, "POST /v1/nodes/release", "node_release", roleService, s.releaseNode)
	s.route(mux, "GET /v1/clinic-tokens", "clinic_tokens_state", roleService, s.clinicTokensState)
	s.route(mux, "PUT /v1/clinic-tokens", "clinic_tokens_put", roleService, s.putClinicTokens)
	s.route(mux, "PUT /v1/clinic-tokens/{clinic}", "clinic_token_set", roleService, s.setClinicToken)
	s.route(mux, "DELETE /v1/clinic-tokens/{clinic}", "clinic_token_delete", roleService, s.deleteClinicToken)
}

// NotFound answers a path no route matches, in JSON like every other error.
func NotFound(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusNotFound, lockapi.Error{Code: lockapi.CodeNotFound, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
}

func (s *Server) route(mux *http.ServeMux, pattern, op string, min role, h handler) {
	// Curried once: a label lookup per request costs a hash and a lock.
	ok, latency := s.m.requests.WithLabelValues(op, "ok"), s.m.latency.WithLabelValues(op)
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		p, authed, err := s.authenticate(r)
		var body any
		switch {
		case err != nil:
		case !authed:
			w.Header().Set("WWW-Authenticate", `Bearer realm="lockd"`)
			err = errorf(http.StatusUnauthorized, lockapi.CodeUnauthorized, "a valid bearer token is required")
		case p.role < min:
			err = errorf(http.StatusForbidden, lockapi.CodeForbidden, "this token may not call %s", op)
		default:
			body, err = h(w, r, p)
		}
		if err != nil {
			e := s.fail(op, p, err)
			if e.retryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int((e.retryAfter+time.Second-1)/time.Second)))
			}
			httpapi.WriteJSON(w, e.status, e.body)
		} else {
			writeOK(w, body)
			ok.Inc()
		}
		latency.Observe(time.Since(start).Seconds())
	})
}

// fail maps a failed operation's error to its answer, and counts and logs it.
func (s *Server) fail(op string, p principal, err error) *apiError {
	e := s.apiError(err)
	if e.status < 500 || e.body.Code == lockapi.CodeNoFreeNode {
		s.m.denials.WithLabelValues(e.body.Code).Inc()
	}
	s.logFailure(op, p, e, err)
	s.m.requests.WithLabelValues(op, e.body.Code).Inc()
	return e
}

func (s *Server) logFailure(op string, p principal, e *apiError, err error) {
	switch {
	case e.body.Code == lockapi.CodeUnavailable:
		s.log.Warn("redis unavailable", "op", op, "err", err)
	case e.status >= 500 && e.body.Code != lockapi.CodeNoFreeNode:
		s.log.Error("request failed", "op", op, "err", err)
	case e.body.Code == lockapi.CodeUnauthorized || e.body.Code == lockapi.CodeForbidden:
		s.log.Warn("request refused", "op", op, "code", e.body.Code, "caller", p.name)
	default:
		s.log.Debug("request denied", "op", op, "code", e.body.Code, "caller", p.name)
	}
}

// apiError is an error answer: status, body and, for no_free_node, when to
// come back.
type apiError struct {
	status     int
	body       lockapi.Error
	retryAfter time.Duration
}

func (e *apiError) Error() string { return e.body.Code + ": " + e.body.Message }

func errorf(status int, code, format string, a ...any) *apiError {
	return &apiError{status: status, body: lockapi.Error{Code: code, Message: fmt.Sprintf(format, a...)}}
}

func invalid(format string, a ...any) *apiError {
	return errorf(http.StatusBadRequest, lockapi.CodeInvalid, format, a...)
}

// apiError maps any error of a handler to its answer.
func (s *Server) apiError(err error) *apiError {
	var (
		ae   *apiError
		he   *httpapi.Error
		held *store.HeldError
		nf   *store.NoFreeNodeError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &he): // from httpapi.Decode
		if he.Code == httpapi.CodeBadRequest {
			return invalid("%s", he.Message)
		}
		return &apiError{status: he.Status, body: lockapi.Error{Code: he.Code, Message: he.Message}}
	case errors.As(err, &held):
		e := errorf(http.StatusConflict, lockapi.CodeHeld, "%s is held by %s (%s side, client %s) until %s",
			held.Lock.Resource, held.Lock.Holder.User, held.Lock.Holder.Side, held.Lock.Holder.Client, held.Lock.ExpiresAt.Format(time.RFC3339))
		e.body.Lock = &held.Lock
		return e
	case errors.Is(err, store.ErrExpired):
		return errorf(http.StatusGone, lockapi.CodeExpired, "the lock or lease is gone (expired, released, or granted again); acquire it anew")
	case errors.Is(err, store.ErrNotYours):
		return errorf(http.StatusForbidden, lockapi.CodeNotYours, "token or secret do not match the current holder")
	case errors.Is(err, store.ErrNotHeld):
		return errorf(http.StatusNotFound, lockapi.CodeNotHeld, "nobody holds the lock")
	case errors.As(err, &nf):
		e := errorf(http.StatusServiceUnavailable, lockapi.CodeNoFreeNode, "no cloud node id is free now; retry later")
		e.retryAfter, e.body.RetryAfterMillis = nf.RetryAfter, nf.RetryAfter.Milliseconds()
		return e
	case errors.Is(err, store.ErrUnavailable):
		return errorf(http.StatusServiceUnavailable, lockapi.CodeUnavailable, "lock storage (Redis) is unavailable; retry later")
	}
	return errorf(http.StatusInternalServerError, lockapi.CodeInternal, "internal error; see the server log")
}

// lockTTL resolves a requested TTL in ms (0: the default).
func (s *Server) lockTTL(ms int64) (time.Duration, error) {
	if ms == 0 {
		return s.opts.DefaultTTL, nil
	}
	d := time.Duration(ms) * time.Millisecond
	if ms < 0 || d < s.opts.MinTTL || d > s.opts.MaxTTL {
		return 0, invalid("ttl_ms must be between %d and %d (or 0 for the default %d)",
			s.opts.MinTTL.Milliseconds(), s.opts.MaxTTL.Milliseconds(), s.opts.DefaultTTL.Milliseconds())
	}
	return d, nil
}

// authorize checks that p may act for clinic.
func authorize(p principal, clinic ids.ID) error {
	if !p.mayActFor(clinic) {
		return errorf(http.StatusForbidden, lockapi.CodeForbidden, "this token may not act for clinic %s", clinic)
	}
	return nil
}

func (s *Server) acquire(w http.ResponseWriter, r *http.Request, p principal) (any, error) {
	var req lockapi.AcquireRequest
	if err := decodeLock(w, r, &req); err != nil {
		return nil, err
	}
	ttl, err := s.checkAcquire(p, &req)
	if err != nil {
		return nil, err
	}
	g, err := s.store.Acquire(r.Context(), req, ttl)
	if err != nil {
		return nil, err
	}
	s.granted(r.Context(), p, req, g)
	return g, nil
}

// checkAcquire validates and authorizes an acquire, puts its version in
// canonical form and returns its TTL.
func (s *Server) checkAcquire(p principal, req *lockapi.AcquireRequest) (time.Duration, error) {
	if err := validClinic(req.Holder.Clinic, "holder.clinic"); err != nil {
		return 0, err
	}
	if err := authorize(p, req.Holder.Clinic); err != nil {
		return 0, err
	}
	v, err := validAcquire(req)
	if err != nil {
		return 0, err
	}
	req.Version = v
	return s.lockTTL(req.TTLMillis)
}

func (s *Server) granted(ctx context.Context, p principal, req lockapi.AcquireRequest, g lockapi.Grant) {
	s.m.grants.Inc()
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("lock granted", "clinic", req.Holder.Clinic, "resource", req.Resource, "token", g.Token, "side", req.Holder.Side, "caller", p.name)
	}
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request, p principal) (any, error) {
	var req lockapi.RenewRequest
	if err := decodeLock(w, r, &req); err != nil {
		return nil, err
	}
	ttl, err := s.checkRenew(p, &req)
	if err != nil {
		return nil, err
	}
	res, err := s.store.Renew(r.Context(), req.Clinic, req.Resource, req.Token, req.Secret, ttl)
	if err != nil {
		return nil, err
	}
	s.m.renewals.Inc()
	return res, nil
}

// checkRenew validates and authorizes a renew and returns its TTL.
func (s *Server) checkRenew(p principal, req *lockapi.RenewRequest) (time.Duration, error) {
	if err := validHeld(req.Clinic, req.Resource, req.Token, req.Secret); err != nil {
		return 0, err
	}
	if err := authorize(p, req.Clinic); err != nil {
		return 0, err
	}
	return s.lockTTL(req.TTLMillis)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request, p principal) (any, error) {
	var req lockapi.ReleaseRequest
	if err := decodeLock(w, r, &req); err != nil {
		return nil, err
	}
	if err := checkRelease(p, &req); err != nil {
		return nil, err
	}
	if err := s.store.Release(r.Context(), req.Clinic, req.Resource, req.Token, req.Secret, req.SavedVersion); err != nil {
		return nil, err
	}
	s.released(r.Context(), p, req)
	return lockapi.Released{Resource: req.Resource, Released: true}, nil
}

// checkRelease validates and authorizes a release.
func checkRelease(p principal, req *lockapi.ReleaseRequest) error {
	if err := validHeld(req.Clinic, req.Resource, req.Token, req.Secret); err != nil {
		return err
	}
	if err := authorize(p, req.Clinic); err != nil {
		return err
	}
	if req.SavedVersion != "" {
		if _, err := version.Parse(req.SavedVersion); err != nil {
			return invalid("saved_version must be A.B")
		}
	}
	return nil
}

func (s *Server) released(ctx context.Context, p principal, req lockapi.ReleaseRequest) {
	s.m.holderReleases.Inc()
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("lock released", "clinic", req.Clinic, "resource", req.Resource, "token", req.Token, "caller", p.name)
	}
}

func (s *Server) inspect(_ http.ResponseWriter, r *http.Request, p principal) (any, error) {
	clinic, err := ids.Parse(r.PathValue("clinic"))
	if err != nil {
		return nil, invalid("clinic in the path must be a decimal id")
	}
	if err := validClinic(clinic, "clinic"); err != nil {
		return nil, err
	}
	if err := authorize(p, clinic); err != nil {
		return nil, err
	}
	resource := r.PathValue("resource")
	if err := validResource(resource); err != nil {
		return nil, err
	}
	st, err := s.store.Inspect(r.Context(), clinic, resource)
	if errors.Is(err, store.ErrNotHeld) {
		e := s.apiError(err)
		e.body.LastToken = st.LastToken
		return nil, e
	}
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s *Server) forceRelease(w http.ResponseWriter, r *http.Request, p principal) (any, error) {
	var req lockapi.ForceReleaseRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return nil, err
	}
	if err := validClinic(req.Clinic, "clinic"); err != nil {
		return nil, err
	}
	if err := validResource(req.Resource); err != nil {
		return nil, err
	}
	l, err := s.store.ForceRelease(r.Context(), req.Clinic, req.Resource)
	if err != nil {
		return nil, err
	}
	s.m.forceReleases.Inc()
	s.log.Info("lock force-released", "clinic", req.Clinic, "resource", req.Resource, "token", l.Token,
		"holder_side", l.Holder.Side, "holder_client", l.Holder.Client, "caller", p.name)
	return lockapi.Released{Resource: req.Resource, Released: true, Lock: &l}, nil
}

func (s *Server) leaseNode(w http.ResponseWriter, r *http.Request, p principal) (any, error) {
	var req lockapi.NodeLeaseRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return nil, err
	}
	if err := validText("owner", req.Owner, maxText); err != nil {
		return nil, err
	}
	l, err := s.store.LeaseNode(r.Context(), req.Owner)
	if err != nil {
		return nil, err
	}
	s.m.nodes.WithLabelValues("lease").Inc()
	s.log.Info("node id leased", "node", l.Node, "owner", req.Owner, "caller", p.name)
	return l, nil
}

func (s *Server) renewNode(w http.ResponseWriter, r *http.Request, _ principal) (any, error) {
	var req lockapi.NodeRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return nil, err
	}
	if err := validNode(req); err != nil {
		return nil, err
	}
	l, err := s.store.RenewNode(r.Context(), req.Node, req.Secret)
	if err != nil {
		return nil, err
	}
	s.m.nodes.WithLabelValues("renew").Inc()
	return l, nil
}

func (s *Server) releaseNode(w http.ResponseWriter, r *http.Request, p principal) (any, error) {
	var req lockapi.NodeRequest
	if err := httpapi.Decode(w, r, &req); err != nil {
		return nil, err
	}
	if err := validNode(req); err != nil {
		return nil, err
	}
	res, err := s.store.ReleaseNode(r.Context(), req.Node, req.Secret)
	if err != nil {
		return nil, err
	}
	s.m.nodes.WithLabelValues("release").Inc()
	s.log.Info("node id released", "node", req.Node, "quarantined_until", res.QuarantinedUntil, "caller", p.name)
	return res, nil
}
