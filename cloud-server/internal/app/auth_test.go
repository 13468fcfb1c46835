package app

import (
	"bufio"
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

	"github.com/scsync/scsync/cloud-server/internal/api"
	"github.com/scsync/scsync/cloud-server/internal/config"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

const adminToken = "operator-admin-token-for-tests"

type running struct {
	base  string
	guard *auth.Guard
	// exited is closed when the node stopped, err is then what run returned.
	exited chan struct{}
	err    error
}

// startCloud starts one sc-cloud node on its own database, vhost, Redis
// prefix and bucket.
func startCloud(t *testing.T, mutate func(*config.Config)) *running {
	t.Helper()
	cfg := cloudConfig(t)
	if mutate != nil {
		mutate(&cfg)
	}
	return startNode(t, cfg)
}

// cloudConfig is the config of a cloud with its own database, vhost, Redis
// prefix and bucket; nodes started with the same config form one cloud.
func cloudConfig(t *testing.T) config.Config {
	t.Helper()
	amqpURL, _ := testenv.RabbitVhost(t)
	_, prefix := testenv.Redis(t)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Postgres.URL = testenv.PostgresDB(t)
	cfg.AMQP.URL = amqpURL
	cfg.Redis.Addr = testenv.RedisAddr()
	cfg.Redis.Prefix = prefix
	cfg.Auth.AdminToken = adminToken
	cfg.S3.Endpoint = testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000")
	cfg.S3.AccessKey = testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync")
	cfg.S3.SecretKey = testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret")
	cfg.S3.Bucket = strings.ReplaceAll(testenv.Name("auth"), "_", "-")
	dropBucketAtEnd(t, cfg)
	return cfg
}

// startNode starts an sc-cloud node with cfg, stopped when the test ends;
// the test fails if the node stopped with an error.
func startNode(t *testing.T, cfg config.Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	r := &running{exited: make(chan struct{})}
	go func() {
		defer close(r.exited)
		r.err = run(ctx, cfg, slog.New(slog.DiscardHandler), func(a string) { addr <- a }, func(g *auth.Guard) { r.guard = g })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.exited:
			if r.err != nil {
				t.Errorf("sc-cloud stopped with %v", r.err)
			}
		case <-time.After(30 * time.Second):
			t.Error("sc-cloud did not stop")
		}
	})
	select {
	case a := <-addr:
		r.base = "http://" + a
		return r
	case <-r.exited:
		t.Fatalf("sc-cloud did not start: %v", r.err)
	case <-time.After(60 * time.Second):
		t.Fatal("sc-cloud did not start within 60s")
	}
	return nil
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

func do(t *testing.T, method, url, token string, in any) reply {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
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

func concrete(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	r := strings.NewReplacer("{collection}", "patients", "{id}", "1", "{clinic}", "4242", "{sha256}", strings.Repeat("a", 64), "{$}", "")
	return method, r.Replace(path)
}

// TestEveryCloudRouteRefusesAnonymous walks sc-cloud's router: every route
// has a rule, the public ones are exactly the allow-list, and every other
// route refuses a request without credentials.
func TestEveryCloudRouteRefusesAnonymous(t *testing.T) {
	t.Setenv("SCSYNC_PPROF", "1")
	srv := startCloud(t, nil)
	policy := srv.guard.Policy()
	var public []string
	patterns := srv.guard.Mux().Patterns()
	if len(patterns) < 40 {
		t.Fatalf("router has %d routes, want the whole API", len(patterns))
	}
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
		for _, tok := range []string{"", "not-a-token"} {
			if got := do(t, method, srv.base+path, tok, in); got.status != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q = %d %s, want 401", method, path, tok, got.status, got.body)
			}
		}
	}
	want := slices.Clone(api.PublicRoutes)
	slices.Sort(want)
	if !slices.Equal(public, want) {
		t.Errorf("public routes = %v, want exactly the allow-list %v", public, want)
	}
}

type clinicCreds struct {
	ID    ids.ID `json:"id"`
	Token string `json:"token"`
}

func newClinic(t *testing.T, base, name string) clinicCreds {
	t.Helper()
	var c clinicCreds
	got := do(t, "POST", base+"/v1/admin/clinics", adminToken, map[string]string{"name": name})
	if got.status != 201 {
		t.Fatalf("create clinic = %d %s", got.status, got.body)
	}
	got.decode(t, &c)
	return c
}

func addUser(t *testing.T, base string, clinic ids.ID, user, role string) ids.ID {
	t.Helper()
	var a struct {
		ID ids.ID `json:"id"`
	}
	got := do(t, "POST", base+"/v1/clinics/"+clinic.String()+"/users", adminToken,
		map[string]string{"username": user, "role": role, "password": "pw-" + user + "-long"})
	if got.status != 201 || strings.Contains(string(got.body), "argon2") {
		t.Fatalf("add %s = %d %s", user, got.status, got.body)
	}
	got.decode(t, &a)
	return a.ID
}

func login(t *testing.T, base string, clinic ids.ID, user string) string {
	t.Helper()
	var a struct {
		Token string `json:"token"`
	}
	got := do(t, "POST", base+"/v1/login", "", map[string]any{"clinic": clinic, "username": user, "password": "pw-" + user + "-long"})
	if got.status != 200 {
		t.Fatalf("login %s = %d %s", user, got.status, got.body)
	}
	got.decode(t, &a)
	return a.Token
}

// TestCloudPeople: the clinic's machine token can no longer act as a
// person; people log in per clinic, roles hold, another clinic's person
// sees nothing, a disabled person is refused at once, the cloud's audit
// log names each person, and a clinic's uploaded chain verifies.
func TestCloudPeople(t *testing.T) {
	srv := startCloud(t, nil)
	base := srv.base
	a, b := newClinic(t, base, "Clinic A"), newClinic(t, base, "Clinic B")
	pa := base + "/v1/clinics/" + a.ID.String() + "/"
	if got := do(t, "GET", pa+"patients", a.Token, nil); got.status != 403 {
		t.Errorf("machine token reads patients = %d, want 403", got.status)
	}
	if got := do(t, "GET", pa+"changes", a.Token, nil); got.status != 200 {
		t.Errorf("machine token pulls changes = %d, want 200", got.status)
	}
	eve, val := addUser(t, base, a.ID, "eve", "editor"), addUser(t, base, a.ID, "val", "viewer")
	bobID := addUser(t, base, b.ID, "bob", "admin")
	eveTok, valTok, bobTok := login(t, base, a.ID, "eve"), login(t, base, a.ID, "val"), login(t, base, b.ID, "bob")
	if got := do(t, "POST", base+"/v1/login", "", map[string]any{"clinic": b.ID, "username": "eve", "password": "pw-eve-long"}); got.status != 401 {
		t.Errorf("eve logs into clinic B = %d, want 401", got.status)
	}
	var p struct {
		ID string `json:"id"`
	}
	got := do(t, "POST", pa+"patients", eveTok, map[string]any{"data": map[string]string{"name": "Cloud Patient"}})
	if got.status != 201 {
		t.Fatalf("editor creates = %d %s", got.status, got.body)
	}
	got.decode(t, &p)
	if got := do(t, "GET", pa+"patients/"+p.ID, valTok, nil); got.status != 200 {
		t.Errorf("viewer reads = %d", got.status)
	}
	if got := do(t, "PUT", pa+"patients/"+p.ID, valTok, map[string]any{"data": map[string]string{"name": "x"}}); got.status != 403 {
		t.Errorf("viewer saves = %d, want 403", got.status)
	}
	if got := do(t, "GET", pa+"patients/"+p.ID, bobTok, nil); got.status != 404 {
		t.Errorf("clinic B's admin reads A's patient = %d, want 404", got.status)
	}
	if got := do(t, "GET", pa+"users/"+eve.String(), eveTok, nil); got.status != 403 {
		t.Errorf("editor reads a user record = %d, want 403", got.status)
	}
	if got := do(t, "PUT", pa+"users/"+val.String(), adminToken, map[string]any{"disabled": true}); got.status != 200 {
		t.Fatalf("disable = %d %s", got.status, got.body)
	}
	if got := do(t, "GET", pa+"patients/"+p.ID, valTok, nil); got.status != 401 {
		t.Errorf("disabled person's request = %d, want 401", got.status)
	}

	var entries struct {
		Items []audit.Entry `json:"items"`
	}
	do(t, "GET", pa+"audit?limit=5000", adminToken, nil).decode(t, &entries)
	var have []string
	for _, e := range entries.Items {
		have = append(have, fmt.Sprintf("%s %s %s %s %d", e.Actor, e.Action, e.Kind, e.Target, e.Outcome))
	}
	wantSeq := []string{
		"machine:" + a.ID.String() + " list   403",
		"operator user.create users " + eve.String() + " 201",
		"operator user.create users " + val.String() + " 201",
		eve.String() + " login users " + eve.String() + " 200",
		val.String() + " login users " + val.String() + " 200",
		eve.String() + " create patients " + p.ID + " 201",
		val.String() + " read patients " + p.ID + " 200",
		val.String() + " update   403",
		bobID.String() + " read patients " + p.ID + " 404",
		eve.String() + " read users " + eve.String() + " 403",
		"operator user.update users " + val.String() + " 200",
		"anonymous read   401",
	}
	if !slices.Equal(have, wantSeq) {
		t.Errorf("cloud audit of clinic A:\n%q\nwant\n%q", have, wantSeq)
	}

	// The clinic uploads its own chain with its machine token.
	var local []audit.Entry
	prev := ""
	for i, act := range []string{"login", "read"} {
		e := audit.Entry{Chain: api.LocalChain(a.ID), Seq: int64(i + 1), At: time.Now().UTC().Truncate(time.Microsecond), Clinic: a.ID,
			Actor: eve.String(), Action: act, Outcome: 200, Prev: prev}
		e.Hash = audit.Hash(e)
		prev = e.Hash
		local = append(local, e)
	}
	if got := do(t, "POST", pa+"audit", a.Token, api.AuditUpload{Entries: local}); got.status != 200 {
		t.Fatalf("upload = %d %s", got.status, got.body)
	}
	if got := do(t, "POST", pa+"audit", a.Token, api.AuditUpload{Entries: local}); got.status != 200 {
		t.Fatalf("upload again (idempotent) = %d %s", got.status, got.body)
	}
	if got := do(t, "POST", base+"/v1/clinics/"+b.ID.String()+"/audit", a.Token, api.AuditUpload{Entries: local}); got.status != 404 {
		t.Errorf("upload to another clinic = %d, want 404", got.status)
	}
	// Refused, whatever the clinic signs: entries naming another clinic,
	// another clinic's chain, a changed entry, a gap past the head.
	entry := func(chain string, clinic ids.ID, seq int64, prev string) audit.Entry {
		e := audit.Entry{Chain: chain, Seq: seq, At: time.Now().UTC().Truncate(time.Microsecond), Clinic: clinic,
			Actor: eve.String(), Action: "read", Outcome: 200, Prev: prev}
		e.Hash = audit.Hash(e)
		return e
	}
	changed := entry(api.LocalChain(a.ID), a.ID, 3, local[1].Hash)
	changed.Outcome = 403
	for _, tc := range []struct {
		name   string
		e      audit.Entry
		status int
		body   string
	}{
		{"naming clinic B", entry(api.LocalChain(b.ID), b.ID, 3, local[1].Hash), 400, `"code":"bad_request","message":"entry 3 is of another clinic"`},
		{"of clinic B's chain", entry(api.LocalChain(b.ID), a.ID, 3, local[1].Hash), 409,
			`"code":"audit_broken","head":2,"message":"audit: import: audit: chain broken: entry 3 does not match its hash"`},
		{"changed", changed, 409, `"code":"audit_broken","head":2,"message":"audit: import: audit: chain broken: entry 3 does not match its hash"`},
		{"past the head", entry(api.LocalChain(a.ID), a.ID, 4, local[1].Hash), 409,
			`"code":"audit_gap","head":2,"message":"audit: import: audit: entries start past the head: entry 4 after head 2"`},
		{"not following", entry(api.LocalChain(a.ID), a.ID, 3, local[0].Hash), 409,
			`"code":"audit_broken","head":2,"message":"audit: import: audit: chain broken: entry 3 does not follow entry 2"`},
	} {
		if got := do(t, "POST", pa+"audit", a.Token, api.AuditUpload{Entries: []audit.Entry{tc.e}}); got.status != tc.status ||
			!strings.Contains(string(got.body), tc.body) {
			t.Errorf("upload of an entry %s = %d %s, want %d %s", tc.name, got.status, got.body, tc.status, tc.body)
		}
	}
	var v audit.Verification
	do(t, "GET", pa+"audit/verify?side=local", adminToken, nil).decode(t, &v)
	if !v.OK || v.Entries != 2 {
		t.Errorf("verify local chain = %+v", v)
	}
	// The operator's export is JSON lines.
	resp := do(t, "GET", base+"/v1/admin/audit/export?clinic="+a.ID.String()+"&side=local", adminToken, nil)
	sc := bufio.NewScanner(bytes.NewReader(resp.body))
	n := 0
	for sc.Scan() {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Hash != local[n].Hash {
			t.Errorf("export line %d = %s (%v)", n, sc.Text(), err)
		}
		n++
	}
	if n != 2 {
		t.Errorf("export has %d lines, want 2", n)
	}
	// Without auth.totp_key no second factor can be enrolled.
	if got := do(t, "POST", base+"/v1/me/totp", eveTok, map[string]any{}); got.status != 409 || !strings.Contains(string(got.body), "totp_not_configured") {
		t.Errorf("enrol without a key = %d %s, want 409 totp_not_configured", got.status, got.body)
	}
}

// TestCloudIdleSessionExpires: automatic logoff in the cloud.
func TestCloudIdleSessionExpires(t *testing.T) {
	srv := startCloud(t, func(c *config.Config) { c.Auth.SessionIdle = time.Second })
	a := newClinic(t, srv.base, "Idle Clinic")
	addUser(t, srv.base, a.ID, "ida", "viewer")
	tok := login(t, srv.base, a.ID, "ida")
	if got := do(t, "GET", srv.base+"/v1/me", tok, nil); got.status != 200 {
		t.Fatalf("fresh session = %d", got.status)
	}
	time.Sleep(2 * time.Second) // the point of the test is time passing unused
	if got := do(t, "GET", srv.base+"/v1/me", tok, nil); got.status != 401 {
		t.Errorf("idle session = %d, want 401", got.status)
	}
}
