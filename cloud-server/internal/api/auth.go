package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"gorm.io/gorm"

	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// WithAuth enables person logins (sessions in PostgreSQL, so they work on
// every node), the users and audit routes, and the guard's authentication.
func (s *Server) WithAuth(sessions *auth.Sessions, log *audit.Log) *Server {
	s.sessions, s.audit = sessions, log
	s.people = &auth.People{Sessions: sessions, Users: userStore{s}, Log: s.log,
		Audit: func(r *http.Request, p auth.Principal, action, target string, status int) {
			clinic := p.Clinic
			if clinic == 0 {
				clinic, _ = ids.Parse(r.PathValue("clinic"))
			}
			s.record(r.Context(), clinic, audit.Entry{Actor: p.Actor(), Username: p.Username, Action: action, Kind: "users",
				Target: target, Remote: r.RemoteAddr, Outcome: status})
		},
		ClinicName: func(ctx context.Context, clinic ids.ID) string {
			c, err := s.st.ClinicByID(ctx, clinic)
			if err != nil {
				return ""
			}
			return c.Name
		}}
	return s
}

// CloudChain is the audit chain of what was done in the cloud for clinic
// (0: the operator's own actions).
func CloudChain(clinic ids.ID) string {
	if clinic == 0 {
		return "cloud:operator"
	}
	return "cloud:" + clinic.String()
}

// LocalChain is the clinic's own audit chain as replicated to the cloud.
func LocalChain(clinic ids.ID) string { return "local:" + clinic.String() }

// PublicRoutes need no credentials: health, metrics, the OpenAPI
// description, login, enrollment (its one-time token is in the body) and
// the viewer's static page.
var PublicRoutes = []string{"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json", "POST /v1/login", "POST /v1/enroll", "GET /viewer/"}

// Policy is who may call each sc-cloud route. The clinic's machine token
// does machine work only (changes, files, backups, the audit upload); a
// person of the clinic needs a session; the operator's admin token reaches
// everything (its calls are audited as the operator).
func Policy() auth.Policy {
	v, e, a := auth.RoleViewer, auth.RoleEditor, auth.RoleAdmin
	r := func(min auth.Role, action string) auth.Rule { return auth.Rule{Min: min, Audit: action} }
	m := func(min auth.Role, action string) auth.Rule { return auth.Rule{Min: min, Machine: true, Audit: action} }
	op := func(action string) auth.Rule { return auth.Rule{Audit: action} }
	// enrol lets a person who must still enrol a second factor call the route.
	enrol := func(rule auth.Rule) auth.Rule { rule.Enrolment = true; return rule }
	c := "/v1/clinics/{clinic}/"
	p := auth.Policy{
		"POST /v1/admin/clinics":                            op("admin.clinic.create"),
		"GET /v1/admin/clinics":                             op(""),
		"PUT /v1/admin/clinics/{clinic}/conflict-policy":    op("admin.conflict_policy"),
		"POST /v1/admin/enrollments":                        op("admin.enrollment"),
		"GET /v1/admin/clinics/{clinic}/retention":          op(""),
		"PUT /v1/admin/clinics/{clinic}/retention":          op("admin.retention"),
		"GET /v1/admin/audit/export":                        op(""),
		"POST /v1/admin/clinics/{clinic}/token":             op("admin.clinic.rotate_token"),
		"POST /v1/admin/clinics/{clinic}/broker":            op("admin.clinic.rotate_broker"),
		"DELETE /v1/admin/clinics/{clinic}/broker":          op("admin.clinic.revoke_broker"),
		"POST /v1/admin/clinics/{clinic}/lockd":             op("admin.clinic.rotate_lockd"),
		"DELETE /v1/admin/clinics/{clinic}/lockd":           op("admin.clinic.revoke_lockd"),
		"POST /v1/admin/clinics/{clinic}/disable":           op("admin.clinic.disable"),
		"POST /v1/admin/clinics/{clinic}/enable":            op("admin.clinic.enable"),
		"GET " + c + "verify":                               m(auth.RoleNone, ""),
		"POST " + c + "verify":                              m(auth.RoleNone, ""),
		"POST /v1/logout":                                   enrol(r(v, "")),
		"GET /v1/me":                                        enrol(r(v, "")),
		"GET /v1/me/totp":                                   enrol(r(v, "")),
		"POST /v1/me/totp":                                  enrol(r(v, "")), // audited by the handler (totp.enrol)
		"POST /v1/me/totp/confirm":                          enrol(r(v, "")), // totp.confirm
		"DELETE " + c + "users/{id}/totp":                   r(a, ""),        // totp.reset
		"GET " + c + "changes":                              m(auth.RoleNone, ""),
		"GET " + c + "digest":                               m(v, ""),
		"GET " + c + "events":                               r(v, ""),
		"GET " + c + "editing":                              r(v, ""),
		"GET " + c + "{collection}":                         r(v, "list"),
		"GET " + c + "{collection}/{id}":                    m(v, "read"), // the machine too: verify compares single records
		"GET " + c + "{collection}/{id}/versions":           r(v, "versions"),
		"GET " + c + "{collection}/{id}/versions/{version}": r(v, "version.read"),
		"GET " + c + "images/{id}/thumbnail":                r(v, ""),
		"GET " + c + "images/{id}/original":                 r(v, "file.download"),
		"GET " + c + "patients/search":                      r(v, "search"),
		"POST " + c + "{collection}":                        r(e, "create"),
		"PUT " + c + "{collection}/{id}":                    r(e, "update"),
		"DELETE " + c + "{collection}/{id}":                 r(e, "delete"),
		"POST " + c + "{collection}/{id}/edit":              r(e, "edit.open"),
		"POST " + c + "{collection}/{id}/heartbeat":         r(e, ""),
		"POST " + c + "{collection}/{id}/save":              r(e, "edit.save"),
		"POST " + c + "{collection}/{id}/rollback":          r(e, "edit.rollback"),
		"POST " + c + "{collection}/{id}/close":             r(e, "edit.close"),
		"POST " + c + "{collection}/{id}/unsync":            r(a, "unsync"),
		"POST " + c + "{collection}/{id}/restore":           r(a, "restore"),
		"GET " + c + "retention":                            m(a, ""),
		"GET " + c + "users":                                r(a, ""),
		"POST " + c + "users":                               r(a, ""),
		"PUT " + c + "users/{id}":                           r(a, ""),
		"GET " + c + "audit":                                m(a, ""),
		"POST " + c + "audit":                               m(auth.RoleNone, ""),
		"GET " + c + "audit/verify":                         r(a, ""),
		"POST " + filekey.PathUpload:                        m(e, ""),
		"DELETE " + filekey.PathUpload:                      m(e, ""),
		"POST " + filekey.PathPartURLs:                      m(e, ""),
		"GET " + filekey.PathParts:                          m(e, ""),
		"POST " + filekey.PathComplete:                      m(e, ""),
		"GET " + filekey.PathFile:                           m(v, ""),
		"POST " + filekey.PathCheck:                         m(v, ""),
		"GET " + filekey.PathDownload:                       m(v, "file.download"),
		"POST " + filekey.PathRestore:                       m(a, "file.restore"),
		"POST " + filekey.PathBackups:                       m(auth.RoleNone, "backup.begin"),
		"GET " + filekey.PathBackups:                        m(a, ""),
		"POST " + filekey.PathBackupComplete:                m(auth.RoleNone, "backup.complete"),
		"GET " + filekey.PathBackupDownload:                 m(a, "backup.download"),
		"GET " + filekey.PathS3Probe:                        m(auth.RoleNone, ""),
		"GET /debug/pprof/":                                 op(""),
		"GET /debug/pprof/cmdline":                          op(""),
		"GET /debug/pprof/profile":                          op(""),
		"GET /debug/pprof/symbol":                           op(""),
		"GET /debug/pprof/trace":                            op(""),
	}
	for _, pat := range PublicRoutes {
		p[pat] = auth.Rule{Public: true}
	}
	return p
}

// Authenticate finds the caller: the operator's admin token, a person's
// session, or a clinic's machine token.
func (s *Server) Authenticate(r *http.Request) (auth.Principal, error) {
	tok := auth.RequestToken(r)
	if tok == "" {
		return auth.Principal{}, auth.ErrNoCredentials
	}
	if s.isAdmin(tok) {
		return auth.Principal{Kind: auth.KindOperator, Role: auth.RoleAdmin}, nil
	}
	if s.sessions != nil {
		p, err := s.sessions.Check(r.Context(), tok)
		if err == nil {
			// require_totp: a person without a confirmed factor may only enrol one.
			if p.MustEnrol, err = s.mustEnrol(r, p); err != nil {
				return auth.Principal{}, err
			}
		}
		if err == nil && p.Clinic != 0 {
			// A disabled clinic's people are refused with its machine
			// credentials: disabling stops every way in at once.
			c, cerr := s.st.ClinicByID(r.Context(), p.Clinic)
			if cerr != nil && !errors.Is(cerr, store.ErrUnknownClinic) {
				return auth.Principal{}, cerr
			}
			if cerr != nil || c.DisabledAt != nil {
				return auth.Principal{}, auth.ErrBadCredentials
			}
		}
		if err == nil || !errors.Is(err, auth.ErrBadCredentials) {
			return p, err
		}
	}
	c, err := s.st.ClinicByToken(r.Context(), tok)
	if errors.Is(err, store.ErrUnknownClinic) {
		return auth.Principal{}, auth.ErrBadCredentials
	}
	if err != nil {
		return auth.Principal{}, err
	}
	return auth.Principal{Kind: auth.KindMachine, Clinic: c.ID}, nil
}

// Audit writes a guarded call to the cloud's audit log of the clinic in
// the path (the operator's chain for routes of no clinic).
func (s *Server) Audit(ev auth.Event) {
	clinic, _ := ids.Parse(ev.Request.PathValue("clinic"))
	if rest, ok := strings.CutPrefix(ev.Request.URL.Path, "/v1/clinics/"); ok && clinic == 0 {
		// A refused call: the mux has not parsed its path.
		seg, _, _ := strings.Cut(rest, "/")
		clinic, _ = ids.Parse(seg)
	}
	detail := ""
	if ev.Status == http.StatusUnauthorized || ev.Status == http.StatusForbidden || ev.Status == http.StatusNotFound {
		detail = ev.Path
	}
	target := ev.ID
	if target == "" {
		target = ev.Request.PathValue("sha256")
	}
	s.record(ev.Request.Context(), clinic, audit.Entry{Actor: ev.Principal.Actor(), Username: ev.Principal.Username, Action: ev.Action,
		Kind: ev.Collection, Target: target, Remote: ev.Remote, Outcome: ev.Status, Detail: detail})
}

// auditInSave returns ctx with the audit entry of the request (when it is
// audited) to be written in the save's own transaction, with status as its
// outcome: the change and its entry commit together, in the clinic's group
// commit, instead of the entry costing a commit of its own after it (and
// waiting for the node's other appends). After the save succeeded, the
// handler calls auth.Audited(ctx); when it failed, the guard records the
// outcome as for any call.
func (s *Server) auditInSave(ctx context.Context, clinic ids.ID, collection string, status int) context.Context {
	if s.audit == nil {
		return ctx
	}
	ev, ok := auth.PendingAudit(ctx)
	if !ok {
		return ctx
	}
	return store.WithSaveHook(ctx, func(tx *gorm.DB, rec store.Record) error {
		_, err := s.audit.AppendTx(tx, audit.Entry{Chain: CloudChain(clinic), Clinic: clinic, Actor: ev.Principal.Actor(),
			Username: ev.Principal.Username, Action: ev.Action, Kind: collection, Target: store.RecordMeta(rec).ID.String(),
			Remote: ev.Remote, Outcome: status})
		return err
	})
}

func (s *Server) record(ctx context.Context, clinic ids.ID, e audit.Entry) {
	if s.audit == nil {
		return
	}
	e.Chain, e.Clinic = CloudChain(clinic), clinic
	if _, err := s.audit.Append(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("audit entry not written", "action", e.Action, "err", err)
	}
}

func (s *Server) registerPeople(mux httpapi.Router) {
	if s.people == nil {
		return
	}
	mux.HandleFunc("POST /v1/login", s.public(func(w http.ResponseWriter, r *http.Request) error { return s.people.Login(w, r, 0) }))
	mux.HandleFunc("POST /v1/logout", s.public(s.people.Logout))
	mux.HandleFunc("GET /v1/me", s.public(s.people.Me))
	c := "/v1/clinics/{clinic}/"
	mux.HandleFunc("GET "+c+"users", s.clinic(s.people.ListUsers))
	mux.HandleFunc("POST "+c+"users", s.clinic(s.people.CreateUser))
	mux.HandleFunc("PUT "+c+"users/{id}", s.clinic(s.people.UpdateUser))
	mux.HandleFunc("GET "+c+"audit", s.clinic(s.listAudit))
	mux.HandleFunc("POST "+c+"audit", s.clinic(s.importAudit))
	mux.HandleFunc("GET "+c+"audit/verify", s.clinic(s.verifyAudit))
	mux.HandleFunc("GET /v1/admin/audit/export", s.admin(s.exportAudit))
}

// errUsersAPI refuses the generic record routes for person accounts.
var errUsersAPI = httpapi.Errorf(http.StatusForbidden, "users_api", "person accounts are managed through /v1/clinics/{clinic}/users")

// chainOf reads ?side=local|cloud (default cloud).
func chainOf(r *http.Request, clinic ids.ID) (string, error) {
	switch r.URL.Query().Get("side") {
	case "", "cloud":
		return CloudChain(clinic), nil
	case "local":
		return LocalChain(clinic), nil
	}
	return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "side must be local or cloud")
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	chain, err := chainOf(r, clinic)
	if err != nil {
		return err
	}
	// A clinic's machine token reads back only the clinic's own chain (a
	// restored clinic fetches the entries its backup did not have).
	if auth.From(r.Context()).Kind == auth.KindMachine && chain != LocalChain(clinic) {
		return httpapi.Errorf(http.StatusForbidden, httpapi.CodeForbidden, "the clinic's token reads its own chain only")
	}
	q, err := audit.QueryFromRequest(r, chain)
	if err != nil {
		return err
	}
	es, err := s.audit.List(r.Context(), q)
	if err != nil {
		return err
	}
	head, err := s.audit.Head(r.Context(), chain)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"items": es, "head": head})
	return nil
}

// AuditUpload is a batch of a clinic's own audit entries.
type AuditUpload struct {
	Entries []audit.Entry `json:"entries"`
}

// importAudit keeps a clinic's entries (its machine token uploads them).
func (s *Server) importAudit(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var up AuditUpload
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20))
	if err := dec.Decode(&up); err != nil {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "entries: %s", err.Error())
	}
	chain := LocalChain(clinic)
	for _, e := range up.Entries {
		if e.Clinic != clinic {
			return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "entry %d is of another clinic", e.Seq)
		}
	}
	head, err := s.audit.Import(r.Context(), chain, up.Entries)
	switch {
	case errors.Is(err, audit.ErrAhead):
		cur, herr := s.audit.Head(r.Context(), chain)
		if herr != nil {
			return herr
		}
		httpapi.WriteJSON(w, http.StatusConflict, map[string]any{"code": "audit_gap", "message": err.Error(), "head": cur})
		return nil
	case errors.Is(err, audit.ErrBroken):
		cur, herr := s.audit.Head(r.Context(), chain)
		if herr != nil {
			return herr
		}
		s.log.Warn("a clinic's audit entries do not continue its chain", "clinic", clinic)
		httpapi.WriteJSON(w, http.StatusConflict, map[string]any{"code": "audit_broken", "message": err.Error(), "head": cur})
		return nil
	case err != nil:
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"head": head})
	return nil
}

func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	chain, err := chainOf(r, clinic)
	if err != nil {
		return err
	}
	v, err := s.audit.Verify(r.Context(), chain)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
	return nil
}

// exportAudit streams a chain as JSON lines (?clinic=&side=local|cloud).
func (s *Server) exportAudit(w http.ResponseWriter, r *http.Request) error {
	clinic, err := ids.Parse(r.URL.Query().Get("clinic"))
	if err != nil && r.URL.Query().Get("clinic") != "" {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "clinic must be a numeric id")
	}
	chain, err := chainOf(r, clinic)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	after := int64(0)
	for {
		es, err := s.audit.List(r.Context(), audit.Query{Chain: chain, After: after, Limit: 1000})
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := enc.Encode(e); err != nil {
				return nil //nolint:nilerr // the client went away
			}
			after = e.Seq
		}
		if len(es) < 1000 {
			return nil
		}
	}
}

// userStore writes accounts as user records of the clinic in the cloud.
type userStore struct{ s *Server }

func (u userStore) CreateUser(ctx context.Context, clinic ids.ID, c records.User) (ids.ID, error) {
	id, err := u.s.ids.Next()
	if err != nil {
		return 0, err
	}
	if _, err := u.s.st.Save(ctx, clinic, store.Edit{Kind: wire.KindUser, ID: id, Create: true, Content: c, ChangeID: id}); err != nil {
		return 0, err
	}
	u.s.notify()
	return id, nil
}

func (u userStore) UpdateUser(ctx context.Context, clinic, id ids.ID, edit func(*records.User) error) error {
	rec, err := u.s.st.Get(ctx, clinic, wire.KindUser, id)
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
	_, err = u.s.save(ctx, clinic, store.Edit{Kind: wire.KindUser, ID: id, Base: &m.Version, Content: c})
	return err
}
