package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libtnb/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/local-server/internal/api"
	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

type running struct {
	base  string
	token string
	guard *auth.Guard
	cfg   config.Config
}

// startServer runs sc-local in this process on a fresh data directory.
func startServer(t *testing.T, mutate func(*config.Config)) *running {
	t.Helper()
	amqpURL, _ := testenv.RabbitVhost(t)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Clinic.ID = 4242
	cfg.Clinic.Node = ids.MinClinicNode
	cfg.Cloud.URL = "http://127.0.0.1:1" // no cloud: the clinic works alone
	cfg.Cloud.Token = "machine-token-unused"
	cfg.AMQP.URL = amqpURL
	cfg.Backup.Every = 0
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	var guard *auth.Guard
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addr <- a }, func(g *auth.Guard) { guard = g })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("sc-local stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("sc-local did not stop")
		}
	})
	var r running
	select {
	case a := <-addr:
		r.base = "http://" + a
	case err := <-done:
		t.Fatalf("sc-local did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("sc-local did not start within 60s")
	}
	tok, err := cfg.APIToken(false)
	if err != nil {
		t.Fatal(err)
	}
	r.token, r.guard, r.cfg = tok, guard, cfg
	return &r
}

type reply struct {
	status int
	body   []byte
}

func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

func (r reply) code() string {
	var e struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Code
}

// do sends a request; in is JSON-encoded (a string is sent as is).
func do(t *testing.T, method, url, token string, in any, hdr ...string) reply {
	t.Helper()
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case string:
		body = strings.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, b}
}

// concrete fills a pattern's wildcards with plausible values.
func concrete(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	r := strings.NewReplacer("{collection}", "patients", "{id}", "1", "{clinic}", "4242", "{sha256}", strings.Repeat("a", 64),
		"{kind}", "patient", "{$}", "")
	return method, r.Replace(path)
}

// TestEveryRouteRefusesAnonymous walks sc-local's router: every route has
// a rule, the public ones are exactly the allow-list, and every other route
// refuses a request without credentials. A new route without a rule fails
// here (and is refused by the guard in production).
func TestEveryRouteRefusesAnonymous(t *testing.T) {
	t.Setenv("SCSYNC_PPROF", "1") // the profiler's routes too
	srv := startServer(t, nil)
	policy := srv.guard.Policy()
	patterns := srv.guard.Mux().Patterns()
	if len(patterns) < 30 {
		t.Fatalf("router has %d routes, want the whole API", len(patterns))
	}
	var public []string
	for _, p := range patterns {
		rule, ok := policy[p]
		if !ok {
			t.Errorf("route %q has no rule in api.Policy", p)
			continue
		}
		if rule.Public {
			public = append(public, p)
			continue
		}
		method, path := concrete(p)
		var in any
		if method != http.MethodGet && method != http.MethodDelete {
			in = map[string]any{}
		}
		if got := do(t, method, srv.base+path, "", in); got.status != http.StatusUnauthorized {
			t.Errorf("%s %s without credentials = %d %s, want 401", method, path, got.status, got.body)
		}
		if got := do(t, method, srv.base+path, "not-a-session", in); got.status != http.StatusUnauthorized {
			t.Errorf("%s %s with an unknown token = %d, want 401", method, path, got.status)
		}
	}
	want := slices.Clone(api.PublicRoutes)
	slices.Sort(want)
	if !slices.Equal(public, want) {
		t.Errorf("public routes = %v, want exactly the allow-list %v", public, want)
	}
}

type account struct {
	ID       ids.ID `json:"id"`
	Username string `json:"username"`
	Role     string `json:"role"`
}

func login(t *testing.T, base, user, pw string) string {
	t.Helper()
	var a struct {
		Token string `json:"token"`
	}
	got := do(t, "POST", base+"/v1/login", "", map[string]string{"username": user, "password": pw})
	if got.status != 200 {
		t.Fatalf("login %s = %d %s", user, got.status, got.body)
	}
	got.decode(t, &a)
	return a.Token
}

func addUser(t *testing.T, srv *running, user, role string) account {
	t.Helper()
	var a account
	got := do(t, "POST", srv.base+"/v1/users", srv.token, map[string]string{"username": user, "role": role, "password": "pw-" + user + "-long"})
	if got.status != 201 {
		t.Fatalf("add %s = %d %s", user, got.status, got.body)
	}
	got.decode(t, &a)
	if strings.Contains(string(got.body), "argon2") {
		t.Fatalf("the account's answer carries its password hash: %s", got.body)
	}
	return a
}

type rec struct {
	ID      string `json:"id"`
	Version string `json:"version"`
}

// TestScriptedSessionAudit is a clinic day as the audit log must tell it:
// people log in, read, edit, save, delete and un-sync; a viewer cannot
// save; a cross-origin text/plain POST is refused; a disabled person is
// refused at once; the log holds exactly those entries with each person's
// id, verifies, and a changed or removed entry is detected.
func TestScriptedSessionAudit(t *testing.T) {
	srv := startServer(t, nil)
	base := srv.base
	ada, eve, val := addUser(t, srv, "ada", "admin"), addUser(t, srv, "eve", "editor"), addUser(t, srv, "val", "viewer")
	if got := do(t, "POST", base+"/v1/login", "", map[string]string{"username": "eve", "password": "wrong-password"}); got.status != 401 {
		t.Fatalf("login with a wrong password = %d, want 401", got.status)
	}
	eveTok, valTok, adaTok := login(t, base, "eve", "pw-eve-long"), login(t, base, "val", "pw-val-long"), login(t, base, "ada", "pw-ada-long")

	var p rec
	if got := do(t, "POST", base+"/v1/patients", eveTok, map[string]any{"data": map[string]string{"name": "Audit Patient"}}); got.status != 201 {
		t.Fatalf("editor creates = %d %s", got.status, got.body)
	} else {
		got.decode(t, &p)
	}
	if got := do(t, "GET", base+"/v1/patients", valTok, nil); got.status != 200 {
		t.Fatalf("viewer lists = %d", got.status)
	}
	if got := do(t, "POST", base+"/v1/patients", valTok, map[string]any{"data": map[string]string{"name": "No"}}); got.status != 403 {
		t.Fatalf("viewer creates = %d, want 403", got.status)
	}
	if got := do(t, "GET", base+"/v1/patients/"+p.ID, eveTok, nil); got.status != 200 {
		t.Fatalf("editor reads = %d", got.status)
	}
	var sess struct {
		ID   string `json:"session"`
		User string `json:"user"`
	}
	got := do(t, "POST", base+"/v1/patients/"+p.ID+"/edit", eveTok, map[string]any{"client": "test", "user": "mallory", "anyway": true})
	if got.status != 200 {
		t.Fatalf("edit = %d %s", got.status, got.body)
	}
	got.decode(t, &sess)
	if sess.User != "eve" {
		t.Errorf("edit session user = %q, want the logged-in person eve (not the client's text)", sess.User)
	}
	if got := do(t, "POST", base+"/v1/patients/"+p.ID+"/save", eveTok, map[string]any{"session": sess.ID, "data": map[string]string{"name": "Audit Patient II"}}); got.status != 200 {
		t.Fatalf("save = %d %s", got.status, got.body)
	}
	if got := do(t, "POST", base+"/v1/patients/"+p.ID+"/close", eveTok, map[string]string{"session": sess.ID}); got.status != 200 {
		t.Fatalf("close = %d %s", got.status, got.body)
	}
	// CSRF: a page elsewhere posting text/plain, and same-origin text/plain.
	if got := do(t, "POST", base+"/v1/patients", eveTok, `{"data":{"name":"x"}}`, "Content-Type", "text/plain", "Origin", "http://evil.example"); got.status != 403 || got.code() != "cross_origin" {
		t.Errorf("cross-origin text/plain POST = %d %s, want 403 cross_origin", got.status, got.body)
	}
	if got := do(t, "POST", base+"/v1/patients", eveTok, `{"data":{"name":"x"}}`, "Content-Type", "text/plain"); got.status != 415 {
		t.Errorf("text/plain POST = %d, want 415", got.status)
	}
	if got := do(t, "GET", base+"/v1/users/"+eve.ID.String(), adaTok, nil); got.status != 403 || got.code() != "users_api" {
		t.Errorf("generic read of a user record = %d %s, want 403 users_api", got.status, got.body)
	}
	var q rec
	do(t, "POST", base+"/v1/patients", eveTok, map[string]any{"data": map[string]string{"name": "To Unsync"}}).decode(t, &q)
	if got := do(t, "POST", base+"/v1/patients/"+q.ID+"/unsync", eveTok, nil); got.status != 403 {
		t.Errorf("editor un-syncs = %d, want 403 (admin only)", got.status)
	}
	if got := do(t, "POST", base+"/v1/patients/"+q.ID+"/unsync", adaTok, nil); got.status != 200 {
		t.Fatalf("admin un-syncs = %d %s", got.status, got.body)
	}
	if got := do(t, "DELETE", base+"/v1/patients/"+p.ID, eveTok, nil); got.status != 200 {
		t.Fatalf("delete = %d %s", got.status, got.body)
	}
	// Disabled: refused at once, with the session still in hand.
	if got := do(t, "PUT", base+"/v1/users/"+val.ID.String(), adaTok, map[string]any{"disabled": true}); got.status != 200 {
		t.Fatalf("disable = %d %s", got.status, got.body)
	}
	if got := do(t, "GET", base+"/v1/patients", valTok, nil); got.status != 401 {
		t.Errorf("disabled person's request = %d, want 401", got.status)
	}
	if got := do(t, "POST", base+"/v1/login", "", map[string]string{"username": "val", "password": "pw-val-long"}); got.status != 401 {
		t.Errorf("disabled person's login = %d, want 401", got.status)
	}

	var entries struct {
		Items []audit.Entry `json:"items"`
	}
	do(t, "GET", base+"/v1/audit?limit=5000", adaTok, nil).decode(t, &entries)
	type line struct {
		actor, action, kind, target string
		outcome                     int
	}
	svc := "service"
	want := []line{
		{svc, "user.create", "users", ada.ID.String(), 201},
		{svc, "user.create", "users", eve.ID.String(), 201},
		{svc, "user.create", "users", val.ID.String(), 201},
		{eve.ID.String(), "login", "users", eve.ID.String(), 401},
		{eve.ID.String(), "login", "users", eve.ID.String(), 200},
		{val.ID.String(), "login", "users", val.ID.String(), 200},
		{ada.ID.String(), "login", "users", ada.ID.String(), 200},
		{eve.ID.String(), "create", "patients", p.ID, 201},
		{val.ID.String(), "list", "patients", "", 200},
		{val.ID.String(), "create", "", "", 403},
		{eve.ID.String(), "read", "patients", p.ID, 200},
		{eve.ID.String(), "edit.open", "patients", p.ID, 200},
		{eve.ID.String(), "edit.save", "patients", p.ID, 200},
		{eve.ID.String(), "edit.close", "patients", p.ID, 200},
		{ada.ID.String(), "read", "users", eve.ID.String(), 403},
		{eve.ID.String(), "create", "patients", q.ID, 201},
		{eve.ID.String(), "unsync", "", "", 403},
		{ada.ID.String(), "unsync", "patients", q.ID, 200},
		{eve.ID.String(), "delete", "patients", p.ID, 200},
		{ada.ID.String(), "user.update", "users", val.ID.String(), 200},
		{"anonymous", "list", "", "", 401},
		{val.ID.String(), "login", "users", val.ID.String(), 401},
	}
	var have []line
	for _, e := range entries.Items {
		have = append(have, line{e.Actor, e.Action, e.Kind, e.Target, e.Outcome})
		if e.Remote == "" || e.At.IsZero() {
			t.Errorf("entry %d lacks where or when: %+v", e.Seq, e)
		}
	}
	if !slices.Equal(have, want) {
		t.Errorf("audit log:\n%s\nwant:\n%s", fmt.Sprint(have), fmt.Sprint(want))
	}

	var v audit.Verification
	do(t, "GET", base+"/v1/audit/verify", adaTok, nil).decode(t, &v)
	if !v.OK || v.Entries != int64(len(want)) {
		t.Fatalf("verify = %+v, want ok with %d entries", v, len(want))
	}
	// Tamper with the database behind the server's back.
	db, err := gorm.Open(sqlite.Open(srv.cfg.DBPath()+"?_pragma=busy_timeout(10000)"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("UPDATE audit_log SET outcome = 200 WHERE seq = 10").Error; err != nil {
		t.Fatal(err)
	}
	do(t, "GET", base+"/v1/audit/verify", adaTok, nil).decode(t, &v)
	if v.OK || !strings.Contains(v.Problem, "entry 10 was changed") {
		t.Errorf("verify after a change = %+v, want entry 10 changed", v)
	}
	if err := db.Exec("UPDATE audit_log SET outcome = 403 WHERE seq = 10").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("DELETE FROM audit_log WHERE seq = 5").Error; err != nil {
		t.Fatal(err)
	}
	do(t, "GET", base+"/v1/audit/verify", adaTok, nil).decode(t, &v)
	if v.OK || !strings.Contains(v.Problem, "entry 5 is missing") {
		t.Errorf("verify after a removal = %+v, want entry 5 missing", v)
	}
	if sqlDB, err := db.DB(); err == nil {
		_ = sqlDB.Close()
	}
}

// TestIdleSessionExpires: a session nobody uses ends (automatic logoff).
func TestIdleSessionExpires(t *testing.T) {
	srv := startServer(t, func(c *config.Config) { c.Auth.SessionIdle = time.Second })
	addUser(t, srv, "ida", "viewer")
	tok := login(t, srv.base, "ida", "pw-ida-long")
	if got := do(t, "GET", srv.base+"/v1/me", tok, nil); got.status != 200 {
		t.Fatalf("fresh session = %d", got.status)
	}
	time.Sleep(2 * time.Second) // idle: the point of the test is time passing unused
	if got := do(t, "GET", srv.base+"/v1/me", tok, nil); got.status != 401 {
		t.Errorf("idle session = %d, want 401", got.status)
	}
}
