package api

import (
	"context"
	"fmt"
	"net/http"

	"gorm.io/gorm"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// Auth is who may call sc-local: persons with sessions, and the machine's
// own API token (kept 0600 in the data directory for the CLI on this
// machine), which acts as an admin.
type Auth struct {
	Sessions *auth.Sessions
	Audit    *audit.Log
	APIToken string
	// ClinicName is the clinic's name (config clinic.name, from enrollment),
	// shown in the viewer's title; "" for none.
	ClinicName string
}

// WithAuth enables login, the users and audit routes, and the guard's
// authentication and audit.
func (s *Server) WithAuth(a Auth) *Server {
	s.auth = &a
	s.people = &auth.People{Sessions: a.Sessions, Users: userStore{s}, Log: s.log,
		Audit: func(r *http.Request, p auth.Principal, action, target string, status int) {
			s.record(r.Context(), audit.Entry{Actor: p.Actor(), Username: p.Username, Action: action, Kind: "users",
				Target: target, Remote: r.RemoteAddr, Outcome: status})
		},
		ClinicName: func(context.Context, ids.ID) string { return a.ClinicName }}
	return s
}

// Chain is the clinic's audit chain.
func Chain(clinic ids.ID) string { return "local:" + clinic.String() }

// Policy is who may call each route of sc-local: viewers read, editors
// write and edit, admins manage accounts, scope, un-sync, backups, import
// and the audit log. Public routes are listed in PublicRoutes.
func Policy() auth.Policy {
	v, e, a := auth.RoleViewer, auth.RoleEditor, auth.RoleAdmin
	r := func(min auth.Role, action string) auth.Rule { return auth.Rule{Min: min, Audit: action} }
	p := auth.Policy{
		"GET /v1/status":                               r(v, ""),
		"GET /v1/digest":                               r(v, ""),
		"GET /v1/me":                                   r(v, ""),
		"POST /v1/logout":                              r(v, ""),
		"GET /v1/events":                               r(v, ""),
		"GET /v1/{collection}":                         r(v, "list"),
		"GET /v1/{collection}/{id}":                    r(v, "read"),
		"GET /v1/{collection}/{id}/versions":           r(v, "versions"),
		"GET /v1/{collection}/{id}/versions/{version}": r(v, "version.read"),
		"GET /v1/images/{id}/thumbnail":                r(v, ""),
		"GET /v1/images/{id}/original":                 r(v, "file.download"),
		"GET /v1/patients/search":                      r(v, "search"),
		"GET /v1/editing":                              r(v, ""),
		"GET /v1/files":                                r(v, ""),
		"GET /v1/files/{id}":                           r(v, ""),
		"GET /v1/scope":                                r(v, ""),
		"GET /v1/backfill":                             r(v, ""),
		"GET /v1/backup":                               r(v, ""),
		"POST /v1/{collection}":                        r(e, "create"),
		"PUT /v1/{collection}/{id}":                    r(e, "update"),
		"DELETE /v1/{collection}/{id}":                 r(e, "delete"),
		"POST /v1/{collection}/{id}/edit":              r(e, "edit.open"),
		"POST /v1/{collection}/{id}/heartbeat":         r(e, ""),
		"POST /v1/{collection}/{id}/save":              r(e, "edit.save"),
		"POST /v1/{collection}/{id}/rollback":          r(e, "edit.rollback"),
		"POST /v1/{collection}/{id}/close":             r(e, "edit.close"),
		"POST /v1/files":                               r(e, "file.import"),
		"POST /v1/import":                              r(a, "import"),
		"PUT /v1/scope":                                r(a, "scope.set"),
		"PUT /v1/{collection}/{id}/sync":               r(a, "sync.choice"),
		"POST /v1/{collection}/{id}/unsync":            r(a, "unsync"),
		"POST /v1/backup":                              r(a, "backup"),
		"POST /v1/verify":                              r(a, "verify"),
		"GET /v1/users":                                r(a, ""),
		"POST /v1/users":                               r(a, ""),
		"PUT /v1/users/{id}":                           r(a, ""),
		"GET /v1/audit":                                r(a, ""),
		"GET /v1/audit/verify":                         r(a, ""),
		"GET /debug/pprof/":                            r(a, ""),
		"GET /debug/pprof/cmdline":                     r(a, ""),
		"GET /debug/pprof/profile":                     r(a, ""),
		"GET /debug/pprof/symbol":                      r(a, ""),
		"GET /debug/pprof/trace":                       r(a, ""),
	}
	for _, pat := range PublicRoutes {
		p[pat] = auth.Rule{Public: true}
	}
	return p
}

// PublicRoutes need no login: health, metrics, the OpenAPI description,
// login and the viewer's static page (which logs in before it reads
// anything).
var PublicRoutes = []string{"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json", "POST /v1/login", "GET /viewer/"}

// Authenticate finds the caller: the API token or a person's session.
func (s *Server) Authenticate(r *http.Request) (auth.Principal, error) {
	tok := auth.RequestToken(r)
	if tok == "" {
		return auth.Principal{}, auth.ErrNoCredentials
	}
	if s.auth == nil {
		return auth.Principal{}, auth.ErrBadCredentials
	}
	if auth.Equal(tok, s.auth.APIToken) {
		return auth.Principal{Kind: auth.KindService, Role: auth.RoleAdmin, Clinic: s.st.Clinic()}, nil
	}
	return s.auth.Sessions.Check(r.Context(), tok)
}

// Audit writes a guarded call to the audit log.
func (s *Server) Audit(ev auth.Event) {
	s.record(ev.Request.Context(), audit.Entry{Actor: ev.Principal.Actor(), Username: ev.Principal.Username, Action: ev.Action,
		Kind: ev.Collection, Target: ev.ID, Remote: ev.Remote, Outcome: ev.Status, Detail: refusedPath(ev)})
}

// refusedPath names the path of a refused call (its only target).
func refusedPath(ev auth.Event) string {
	if ev.Status == http.StatusUnauthorized || ev.Status == http.StatusForbidden {
		return ev.Path
	}
	return ""
}

// auditInWrite returns ctx with the audit entry of the request (when it is
// audited) to be written in the save's own transaction, with status as its
// outcome: the change and its entry commit together, in one group commit
// instead of two (docs/performance.md). After the save succeeded, the
// handler calls auth.Audited(ctx); when it failed, the guard records the
// refusal as for any call.
func (s *Server) auditInWrite(ctx context.Context, collection string, status int) context.Context {
	if s.auth == nil || s.auth.Audit == nil {
		return ctx
	}
	ev, ok := auth.PendingAudit(ctx)
	if !ok {
		return ctx
	}
	clinic := s.st.Clinic()
	return store.WithWriteHook(ctx, func(tx *gorm.DB, rec store.Record) error {
		_, err := s.auth.Audit.AppendTx(tx, audit.Entry{Chain: Chain(clinic), Clinic: clinic, Actor: ev.Principal.Actor(),
			Username: ev.Principal.Username, Action: ev.Action, Kind: collection, Target: store.RecordMeta(rec).ID.String(),
			Remote: ev.Remote, Outcome: status})
		return err
	})
}

func (s *Server) record(ctx context.Context, e audit.Entry) {
	if s.auth == nil || s.auth.Audit == nil {
		return
	}
	e.Chain, e.Clinic = Chain(s.st.Clinic()), s.st.Clinic()
	if _, err := s.auth.Audit.Append(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("audit entry not written", "action", e.Action, "err", err)
	}
}

func (s *Server) registerPeople(mux httpapi.Router) {
	if s.people == nil {
		return
	}
	clinic := s.st.Clinic()
	mux.HandleFunc("POST /v1/login", s.wrap(func(w http.ResponseWriter, r *http.Request) error { return s.people.Login(w, r, clinic) }))
	mux.HandleFunc("POST /v1/logout", s.wrap(s.people.Logout))
	mux.HandleFunc("GET /v1/me", s.wrap(s.people.Me))
	mux.HandleFunc("GET /v1/users", s.wrap(func(w http.ResponseWriter, r *http.Request) error { return s.people.ListUsers(w, r, clinic) }))
	mux.HandleFunc("POST /v1/users", s.wrap(func(w http.ResponseWriter, r *http.Request) error { return s.people.CreateUser(w, r, clinic) }))
	mux.HandleFunc("PUT /v1/users/{id}", s.wrap(func(w http.ResponseWriter, r *http.Request) error { return s.people.UpdateUser(w, r, clinic) }))
	mux.HandleFunc("GET /v1/audit", s.wrap(s.listAudit))
	mux.HandleFunc("GET /v1/audit/verify", s.wrap(s.verifyAudit))
}

// errUsersAPI refuses the generic record routes for person accounts: their
// hashes must not be read, and a generic save would drop them.
var errUsersAPI = httpapi.Errorf(http.StatusForbidden, "users_api", "person accounts are managed through /v1/users")

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	q, err := audit.QueryFromRequest(r, Chain(s.st.Clinic()))
	if err != nil {
		return err
	}
	es, err := s.auth.Audit.List(r.Context(), q)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": es})
	return nil
}

func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) error {
	v, err := s.auth.Audit.Verify(r.Context(), Chain(s.st.Clinic()))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
	return nil
}

// userStore writes accounts as user records of the clinic.
type userStore struct{ s *Server }

func (u userStore) CreateUser(ctx context.Context, _ ids.ID, c records.User) (ids.ID, error) {
	rec, err := u.s.st.Save(ctx, store.Edit{Kind: wire.KindUser, Content: c})
	if err != nil {
		return 0, err
	}
	u.s.notify()
	return store.RecordMeta(rec).ID, nil
}

func (u userStore) UpdateUser(ctx context.Context, _ ids.ID, id ids.ID, edit func(*records.User) error) error {
	rec, err := u.s.st.Get(ctx, wire.KindUser, id)
	if err != nil {
		return err
	}
	m := store.RecordMeta(rec)
	if m.Deleted {
		return store.ErrNotFound
	}
	c, ok := store.RecordContent(rec).(records.User)
	if !ok {
		return fmt.Errorf("api: record %d is not a user", id)
	}
	if err := edit(&c); err != nil {
		return err
	}
	if _, err := u.s.st.Save(ctx, store.Edit{Kind: wire.KindUser, ID: id, Base: &m.Version, Content: c}); err != nil {
		return err
	}
	u.s.notify()
	return nil
}
