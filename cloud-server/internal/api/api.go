// Package api is sc-cloud's REST API. Every route passes the guard of
// Policy (auth.go): a person's session of the clinic in the path, the
// clinic's machine token on machine routes only, or the operator's admin
// token; a clinic's credentials reach only that clinic.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/scsync/scsync/cloud-server/internal/brokeradmin"
	"github.com/scsync/scsync/cloud-server/internal/mfa"
	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/antientropy"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// IDs mints ids for records created in the cloud and for changes.
type IDs interface {
	Next() (ids.ID, error)
}

// Server holds the handlers' dependencies.
type Server struct {
	st         *store.Store
	edit       *editing.Manager
	ids        IDs
	adminToken string
	notify     func()
	onRewind   func()
	onClinic   func()
	// onProtocols is told the range a clinic stated (pull, enrollment).
	onProtocols func(ids.ID, wire.Range, bool)
	log         *slog.Logger
	// Credential issuers (identity.go); nil when not configured.
	broker    Broker
	lockd     LockdTokens
	lockdURL  string
	onDisable func(ids.ID)
	sessions  *auth.Sessions
	audit     *audit.Log
	people    *auth.People
	// mfa is the second factor of person logins (totp.go).
	mfa         *mfa.Store
	requireTOTP bool
}

// New returns the API. notify is called after a commit that wrote an outbox row.
func New(st *store.Store, edit *editing.Manager, gen IDs, adminToken string, notify func(), log *slog.Logger) *Server {
	return &Server{st: st, edit: edit, ids: gen, adminToken: adminToken, notify: notify, log: log}
}

// Register mounts the routes on mux.
func (s *Server) Register(mux httpapi.Router) {
	mux.HandleFunc("POST /v1/admin/clinics", s.admin(s.createClinic))
	mux.HandleFunc("GET /v1/admin/clinics", s.admin(s.listClinics))
	mux.HandleFunc("PUT /v1/admin/clinics/{clinic}/conflict-policy", s.admin(s.setPolicy))
	mux.HandleFunc("POST /v1/admin/enrollments", s.admin(s.createEnrollment))
	// A clinic server registers itself with a one-time token (sc-local enroll).
	mux.HandleFunc("POST /v1/enroll", s.public(s.enroll))
	mux.HandleFunc("GET /v1/clinics/{clinic}/changes", s.clinic(s.changes))
	mux.HandleFunc("GET /v1/clinics/{clinic}/digest", s.clinic(s.digest))
	mux.HandleFunc("GET /v1/clinics/{clinic}/verify", s.clinic(s.verify))
	mux.HandleFunc("POST /v1/clinics/{clinic}/verify", s.clinic(s.verifyBuckets))
	// Every record kind: /v1/clinics/{clinic}/{collection} where collection
	// is the kind's table name (patients, studies, images…).
	mux.HandleFunc("GET /v1/clinics/{clinic}/{collection}", s.clinic(s.list))
	mux.HandleFunc("POST /v1/clinics/{clinic}/{collection}", s.clinic(s.create))
	mux.HandleFunc("GET /v1/clinics/{clinic}/{collection}/{id}", s.clinic(s.get))
	mux.HandleFunc("PUT /v1/clinics/{clinic}/{collection}/{id}", s.clinic(s.update))
	mux.HandleFunc("DELETE /v1/clinics/{clinic}/{collection}/{id}", s.clinic(s.remove))
	mux.HandleFunc("POST /v1/clinics/{clinic}/{collection}/{id}/unsync", s.clinic(s.unsync))
	s.registerEditing(mux)
	s.registerIdentity(mux)
	s.registerPeople(mux)
	s.registerTOTP(mux)
	s.registerSearch(mux)
}

type handler = func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error

// Clinic wraps h with the clinic authorization of every /v1/clinics/{clinic}
// route (for routes other packages serve, like files).
func (s *Server) Clinic(h func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error) http.HandlerFunc {
	return s.clinic(h)
}

// Admin wraps h with the operator authorization of the /v1/admin routes
// (for routes other packages serve, like retention).
func (s *Server) Admin(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return s.admin(h)
}

// IsAdmin reports whether r carries the operator's admin token.
func (s *Server) IsAdmin(r *http.Request) bool { return s.isAdmin(bearer(r)) }

func bearer(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(tok)
}

func (s *Server) isAdmin(tok string) bool {
	return s.adminToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.adminToken)) == 1
}

var errUnauthorized = httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "missing or unknown bearer token")

func (s *Server) admin(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.isAdmin(bearer(r)) {
			httpapi.WriteError(w, s.log, errUnauthorized)
			return
		}
		if err := h(w, r); err != nil {
			httpapi.WriteError(w, s.log, mapErr(err))
		}
	}
}

// clinic authorizes the caller for the {clinic} of the path: a clinic token
// works only for its own clinic; a foreign clinic gets the same 404 as a
// missing one, so ids of other clinics cannot be probed.
func (s *Server) clinic(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		clinic, err := ids.Parse(r.PathValue("clinic"))
		if err != nil {
			httpapi.WriteError(w, s.log, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "clinic must be a numeric id"))
			return
		}
		if r.PathValue("collection") == "users" {
			httpapi.WriteError(w, s.log, errUsersAPI)
			return
		}
		if p := auth.From(r.Context()); p.Kind != "" {
			// The guard authenticated the caller: a person or a machine
			// reaches only its own clinic; a foreign clinic gets the same
			// 404 as a missing one.
			if p.Kind != auth.KindOperator && p.Clinic != clinic {
				httpapi.WriteError(w, s.log, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such clinic"))
				return
			}
			if p.Kind == auth.KindOperator {
				if _, err := s.st.ClinicByID(r.Context(), clinic); err != nil {
					httpapi.WriteError(w, s.log, mapErr(err))
					return
				}
			}
			if err := h(w, r, clinic); err != nil {
				httpapi.WriteError(w, s.log, mapErr(err))
			}
			return
		}
		tok := bearer(r)
		switch {
		case tok == "":
			httpapi.WriteError(w, s.log, errUnauthorized)
			return
		case s.isAdmin(tok):
			if _, err := s.st.ClinicByID(r.Context(), clinic); err != nil {
				httpapi.WriteError(w, s.log, mapErr(err))
				return
			}
		default:
			c, err := s.st.ClinicByToken(r.Context(), tok)
			if errors.Is(err, store.ErrUnknownClinic) {
				httpapi.WriteError(w, s.log, errUnauthorized)
				return
			}
			if err != nil {
				httpapi.WriteError(w, s.log, err)
				return
			}
			if c.ID != clinic {
				httpapi.WriteError(w, s.log, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such clinic"))
				return
			}
		}
		if err := h(w, r, clinic); err != nil {
			httpapi.WriteError(w, s.log, mapErr(err))
		}
	}
}

func mapErr(err error) error {
	err = editing.MapError(err)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such record")
	case errors.Is(err, store.ErrUnknownClinic):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such clinic")
	case errors.Is(err, store.ErrVersionConflict):
		return httpapi.Errorf(http.StatusConflict, "version_conflict", "%s", afterLast(err.Error(), "store: "))
	case errors.Is(err, store.ErrExists):
		return httpapi.Errorf(http.StatusConflict, "exists", "a record with that id exists")
	case errors.Is(err, store.ErrStaleFence):
		return httpapi.Errorf(http.StatusConflict, "stale_fence", "%s", afterLast(err.Error(), "store: "))
	case errors.Is(err, store.ErrCollision):
		return httpapi.Errorf(http.StatusConflict, "edit_collision", "%s", afterLast(err.Error(), "store: "))
	case errors.Is(err, store.ErrMissingRef):
		return httpapi.Errorf(http.StatusUnprocessableEntity, "missing_reference", "%s", afterLast(err.Error(), "store: "))
	case errors.Is(err, records.ErrInvalid):
		return httpapi.Errorf(http.StatusBadRequest, "invalid_record", "%s", afterLast(err.Error(), "records: invalid: "))
	case errors.Is(err, context.Canceled):
		return httpapi.Errorf(499, "canceled", "request canceled")
	}
	return err
}

// afterLast strips wrapping prefixes up to the last occurrence of sep.
func afterLast(msg, sep string) string {
	if i := strings.LastIndex(msg, sep); i >= 0 {
		return msg[i+len(sep):]
	}
	return msg
}

type createClinicReq struct {
	Name           string `json:"name"`
	ConflictPolicy string `json:"conflict_policy,omitempty"`
}

// validate trims and checks a new clinic's name and conflict policy.
func (req *createClinicReq) validate() error {
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" {
		return httpapi.Errorf(http.StatusBadRequest, "invalid_clinic", "name is required")
	}
	if req.ConflictPolicy != "" && !store.ValidPolicy(req.ConflictPolicy) {
		return httpapi.Errorf(http.StatusBadRequest, "invalid_clinic", "conflict_policy must be local-wins, cloud-wins or keep-both")
	}
	return nil
}

// ClinicCredentials is what enrollment hands a clinic, once: its API token,
// its own broker identity and its lockd token (each when this cloud issues
// it; see identity.go).
type ClinicCredentials struct {
	store.Clinic
	Token string                   `json:"token"`
	AMQP  *brokeradmin.Credentials `json:"amqp,omitempty"`
	Lockd *LockdCredentials        `json:"lockd,omitempty"`
}

func (s *Server) createClinic(w http.ResponseWriter, r *http.Request) error {
	var req createClinicReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if _, err := requestProtocols(r); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	id, err := s.ids.Next()
	if err != nil {
		return err
	}
	var cr ClinicCredentials
	if err := s.credentials(r.Context(), id, &cr); err != nil {
		return err
	}
	c, tok, err := s.st.CreateClinic(r.Context(), id, req.Name, req.ConflictPolicy)
	if err != nil {
		s.undo(id)
		return err
	}
	cr.Clinic, cr.Token = c, tok
	if err := s.afterCreate(r.Context(), &cr); err != nil {
		return err
	}
	if err := s.enrollProtocols(r, &cr); err != nil {
		return err
	}
	s.log.Info("clinic enrolled", "clinic", c.ID, "node", c.NodeID)
	if s.onClinic != nil {
		s.onClinic()
	}
	httpapi.WriteJSON(w, http.StatusCreated, cr)
	return nil
}

func (s *Server) listClinics(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.st.Clinics(r.Context())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"clinics": cs})
	return nil
}

// Digest is the per-record hash of a clinic's replicated state; sc-local
// serves the same, so comparing them proves both sides converged.
type Digest struct {
	Count   int               `json:"count"`
	Records map[string]string `json:"records"`
}

func (s *Server) digest(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	d, err := s.st.Digest(r.Context(), clinic)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, Digest{Count: len(d), Records: d})
	return nil
}

// verifyBuckets answers sc-local's anti-entropy (docs/verify.md): asked
// for a summary, the cloud's record count and bucket hashes; given the
// clinic's bucket hashes, the cloud's, the buckets that differ and the
// records of the first of them; given buckets wanted, their records.
func (s *Server) verifyBuckets(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req antientropy.Request
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	given := 0
	for _, ok := range []bool{req.Summary, req.Hashes != nil, req.Want != nil} {
		if ok {
			given++
		}
	}
	switch {
	case given != 1:
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "give one of summary, hashes or want")
	case req.Hashes != nil && len(req.Hashes) != antientropy.Buckets:
		return httpapi.Errorf(http.StatusBadRequest, "invalid_bucket", "hashes must hold %d buckets, not %d", antientropy.Buckets, len(req.Hashes))
	case len(req.Want) > antientropy.MaxAnswerBuckets:
		return httpapi.Errorf(http.StatusBadRequest, "invalid_bucket", "want at most %d buckets", antientropy.MaxAnswerBuckets)
	}
	for _, b := range req.Want {
		if b < 0 || b >= antientropy.Buckets {
			return httpapi.Errorf(http.StatusBadRequest, "invalid_bucket", "bucket must be 0..%d", antientropy.Buckets-1)
		}
	}
	ans, err := s.st.Verify(r.Context(), clinic, req)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, ans)
	return nil
}

// verify answers the first anti-entropy protocol, for clinics not yet
// upgraded: the 256 bucket hashes of the clinic's records, or with
// ?bucket=N the records of one bucket (docs/verify.md).
func (s *Server) verify(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	q := r.URL.Query().Get("bucket")
	if q == "" {
		sum, err := s.st.VerifySummary(r.Context(), clinic)
		if err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, sum)
		return nil
	}
	b, err := strconv.Atoi(q)
	if err != nil || b < 0 || b >= antientropy.LegacyBuckets {
		return httpapi.Errorf(http.StatusBadRequest, "invalid_bucket", "bucket must be 0..%d", antientropy.LegacyBuckets-1)
	}
	d, err := s.st.VerifyBucket(r.Context(), clinic, b)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	p, err := httpapi.ParseList(r, spec)
	if err != nil {
		return err
	}
	q := store.ListQuery{Limit: p.Limit, After: p.After, UpdatedSince: p.UpdatedSince, WithDeleted: p.WithDeleted, Parent: p.Parent}
	q.ConflictOnly = r.URL.Query().Get("conflict") == "true"
	switch q.RetentionState = r.URL.Query().Get("retention_state"); q.RetentionState {
	case "", store.RetentionBackedUp, store.RetentionDeleted:
	default:
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "retention_state must be backed-up or deleted")
	}
	rs, err := s.st.List(r.Context(), clinic, spec.Kind, q)
	if err != nil {
		return err
	}
	page := httpapi.Page[store.Record]{Items: rs}
	if len(rs) == q.Limit {
		page.Next = store.RecordMeta(rs[len(rs)-1]).ID.String()
	}
	httpapi.WriteJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	rec, err := s.st.Get(r.Context(), clinic, spec.Kind, id)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rec)
	return nil
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	_, c, err := httpapi.DecodeSave(w, r, spec)
	if err != nil {
		return err
	}
	id, err := s.ids.Next()
	if err != nil {
		return err
	}
	ctx := s.auditInSave(r.Context(), clinic, r.PathValue("collection"), http.StatusCreated)
	rec, err := s.st.Save(ctx, clinic, store.Edit{Kind: spec.Kind, ID: id, Create: true, Content: c, ChangeID: id})
	if err != nil {
		return err
	}
	auth.Audited(ctx)
	s.notify()
	httpapi.WriteJSON(w, http.StatusCreated, rec)
	return nil
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	req, c, err := httpapi.DecodeSave(w, r, spec)
	if err != nil {
		return err
	}
	rec, err := s.save(s.auditInSave(r.Context(), clinic, r.PathValue("collection"), http.StatusOK), clinic, store.Edit{Kind: spec.Kind, ID: id, Base: req.BaseVersion, Content: c})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rec)
	return nil
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	base, err := httpapi.BaseVersionParam(r)
	if err != nil {
		return err
	}
	rec, err := s.save(s.auditInSave(r.Context(), clinic, r.PathValue("collection"), http.StatusOK), clinic, store.Edit{Kind: spec.Kind, ID: id, Base: base, Delete: true})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rec)
	return nil
}

// unsync takes a record out of the cloud (a tombstone); the clinic keeps
// its copy, excluded from sync (M7).
func (s *Server) unsync(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	spec, err := httpapi.Collection(r)
	if err != nil {
		return err
	}
	id, err := httpapi.RecordID(r)
	if err != nil {
		return err
	}
	rec, err := s.save(s.auditInSave(r.Context(), clinic, r.PathValue("collection"), http.StatusOK), clinic, store.Edit{Kind: spec.Kind, ID: id, Delete: true, Unsync: true})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rec)
	return nil
}

// save applies a cloud edit; without a base version it edits whatever is
// current. ctx may carry the request's audit entry (auditInSave).
func (s *Server) save(ctx context.Context, clinic ids.ID, ed store.Edit) (store.Record, error) {
	changeID, err := s.ids.Next()
	if err != nil {
		return nil, err
	}
	ed.ChangeID = changeID
	rec, err := s.st.Save(ctx, clinic, ed)
	if err != nil {
		return nil, err
	}
	auth.Audited(ctx)
	s.notify()
	return rec, nil
}

// public serves a route that authenticates by its body (a one-time token).
func (s *Server) public(h func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			httpapi.WriteError(w, s.log, mapErr(err))
		}
	}
}

type enrollmentReq struct {
	createClinicReq
	// TTL is how long the token stays valid (Go duration, default 72h).
	TTL string `json:"ttl,omitempty"`
}

// EnrollmentToken is the one-time token handed to clinic IT.
type EnrollmentToken struct {
	store.Enrollment
	Token string `json:"token"`
}

func (s *Server) createEnrollment(w http.ResponseWriter, r *http.Request) error {
	var req enrollmentReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	ttl := 72 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Minute || d > 30*24*time.Hour {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "ttl must be a duration between 1m and 720h")
		}
		ttl = d
	}
	e, tok, err := s.st.CreateEnrollment(r.Context(), req.Name, req.ConflictPolicy, ttl)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusCreated, EnrollmentToken{Enrollment: e, Token: tok})
	return nil
}

type enrollReq struct {
	Token string `json:"token"`
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) error {
	var req enrollReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if _, err := requestProtocols(r); err != nil {
		return err
	}
	id, err := s.ids.Next()
	if err != nil {
		return err
	}
	var cr ClinicCredentials
	c, tok, err := s.st.Enroll(r.Context(), strings.TrimSpace(req.Token), id, func(ctx context.Context) error {
		return s.credentials(ctx, id, &cr)
	})
	if err != nil && (cr.AMQP != nil || cr.Lockd != nil) {
		s.undo(id)
	}
	if errors.Is(err, store.ErrEnrollment) {
		return httpapi.Errorf(http.StatusUnauthorized, "enrollment_refused", "the enrollment token is unknown, already used or expired; ask the cloud operator for a new one")
	}
	if err != nil {
		return err
	}
	cr.Clinic, cr.Token = c, tok
	if err := s.afterCreate(r.Context(), &cr); err != nil {
		return err
	}
	if err := s.enrollProtocols(r, &cr); err != nil {
		return err
	}
	s.log.Info("clinic enrolled itself", "clinic", c.ID, "node", c.NodeID)
	if s.onClinic != nil {
		s.onClinic()
	}
	httpapi.WriteJSON(w, http.StatusCreated, cr)
	return nil
}

type policyReq struct {
	ConflictPolicy string `json:"conflict_policy"`
}

func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request) error {
	clinic, err := ids.Parse(r.PathValue("clinic"))
	if err != nil {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "clinic must be a numeric id")
	}
	var req policyReq
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	if !store.ValidPolicy(req.ConflictPolicy) {
		return httpapi.Errorf(http.StatusBadRequest, "invalid_clinic", "conflict_policy must be local-wins, cloud-wins or keep-both")
	}
	c, err := s.st.SetConflictPolicy(r.Context(), clinic, req.ConflictPolicy)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, c)
	return nil
}

func (s *Server) changes(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	v := r.URL.Query()
	since, err := strconv.ParseInt(v.Get("since"), 10, 64)
	if v.Get("since") == "" {
		since, err = 0, nil
	}
	if err != nil || since < 0 {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "since must be a cloud_seq (≥ 0)")
	}
	limit := 500
	if s := v.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
		if err != nil || limit < 1 || limit > 5000 {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "limit must be 1..5000")
		}
	}
	// A clinic's own sync pull (ack=true) says it applied everything up to
	// since; one from below what it acknowledged before is a clinic that
	// came back older (restored or wiped): this answer and the next
	// re-send what it lost.
	if v.Get("ack") == "true" && !s.isAdmin(bearer(r)) {
		rw, err := s.st.NoteCheckpoint(r.Context(), clinic, since)
		if err != nil {
			return err
		}
		if rw != nil {
			s.log.Warn("clinic came back older than it had acknowledged (restored from a backup or wiped); re-sending what it lost",
				"clinic", clinic, "acknowledged_cloud_seq", rw.From, "now_at", rw.To)
			if s.onRewind != nil {
				s.onRewind()
			}
		}
	}
	// The clinic states the protocol range it speaks (none: a release
	// before ranges, exactly wire.LegacyProtocol); the page comes in the
	// newest version both speak, and the answer states this node's range.
	theirs, err := requestProtocols(r)
	if err != nil {
		return err
	}
	wire.Local().SetHTTP(w.Header())
	if v.Get("ack") == "true" && !s.isAdmin(bearer(r)) {
		if err := s.noteProtocols(r.Context(), clinic, theirs); err != nil {
			return err
		}
	}
	page, err := s.st.ChangesSince(r.Context(), clinic, since, limit)
	if err != nil {
		return err
	}
	for i, e := range page.Changes {
		if page.Changes[i], err = e.As(theirs.Version); err != nil {
			return err
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, page)
	return nil
}

// negotiated is the range a request stated and the version to answer in.
type negotiated struct {
	wire.Range
	Stated  bool
	Version int
}

// requestProtocols reads the range a request states and the newest
// version both sides speak; a clinic this node cannot speak to is refused
// with a message that says which side to upgrade.
func requestProtocols(r *http.Request) (negotiated, error) {
	p, stated, err := wire.RangeOfHTTP(r.Header)
	if err != nil {
		return negotiated{}, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%s and %s must state a protocol range (integers, min ≤ max)",
			wire.HeaderProtocolMin, wire.HeaderProtocolMax)
	}
	v, err := wire.Negotiate(wire.Local(), p)
	if err != nil {
		return negotiated{}, httpapi.Errorf(http.StatusBadRequest, "protocol_unsupported",
			"this cloud speaks wire protocol %s and the clinic %s: upgrade the older side (docs/upgrade.md)", wire.Local(), p)
	}
	return negotiated{Range: p, Stated: stated, Version: v}, nil
}

// noteProtocols records the range a clinic stated (stated false: none)
// and tells the replicator when it changed.
func (s *Server) noteProtocols(ctx context.Context, clinic ids.ID, p negotiated) error {
	changed, err := s.st.SetProtocols(ctx, clinic, p.Range, p.Stated)
	if err != nil {
		return err
	}
	if changed {
		s.log.Info("clinic protocol range recorded", "clinic", clinic, "range", p.String(), "stated", p.Stated)
		if s.onProtocols != nil {
			s.onProtocols(clinic, p.Range, p.Stated)
		}
	}
	return nil
}

// enrollProtocols records the range the enrolling clinic states, if any
// (an operator creating a clinic by hand states none: its sc-local states
// it on its first pull).
func (s *Server) enrollProtocols(r *http.Request, cr *ClinicCredentials) error {
	p, err := requestProtocols(r)
	if err != nil || !p.Stated {
		return err
	}
	if err := s.noteProtocols(r.Context(), cr.ID, p); err != nil {
		return err
	}
	cr.ProtocolMin, cr.ProtocolMax = &p.Min, &p.Max
	return nil
}

// OnProtocols sets a function told the protocol range a clinic stated
// when it changed (the replicator converts its down messages to it).
func (s *Server) OnProtocols(f func(clinic ids.ID, p wire.Range, stated bool)) { s.onProtocols = f }

// OnClinic sets a function called after a clinic is enrolled here (to
// start replicating it at once).
func (s *Server) OnClinic(f func()) { s.onClinic = f }

// OnRewind sets a function called each time a clinic is found older than
// what it had acknowledged (for a metric).
func (s *Server) OnRewind(f func()) { s.onRewind = f }
