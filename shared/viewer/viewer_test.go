package viewer

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/testenv"
)

var cloudCfg = Config{Side: SideCloud, APIPrefix: "/v1/clinics/{clinic}/", EventsPath: "/v1/clinics/{clinic}/events"}

func TestHandler(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle("GET /viewer/", Handler(cloudCfg))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	tests := []struct {
		method, path string
		status       int
		contentType  string
		contains     []string
	}{
		{"GET", "/viewer/?clinic=42", 200, "text/html; charset=utf-8", []string{
			`data-side="cloud"`, `data-api-prefix="/v1/clinics/{clinic}/"`, `data-events-path="/v1/clinics/{clinic}/events"`,
			`<script src="app.js"`, `href="style.css"`, "<title>scsync viewer (cloud)</title>",
		}},
		{"GET", "/viewer/index.html", 200, "text/html; charset=utf-8", []string{`id="editor"`}},
		{"GET", "/viewer/app.js", 200, "text/javascript; charset=utf-8", []string{"'use strict'"}},
		{"GET", "/viewer/style.css", 200, "text/css; charset=utf-8", []string{".badge"}},
		{"HEAD", "/viewer/app.js", 200, "text/javascript; charset=utf-8", nil},
		{"GET", "/viewer/missing.js", 404, "", nil},
		{"GET", "/viewer", http.StatusTemporaryRedirect, "", nil}, // by ServeMux, to /viewer/
		{"POST", "/viewer/", 405, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("%s %s status = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.status)
			}
			if tt.status == http.StatusTemporaryRedirect && resp.Header.Get("Location") != "/viewer/" {
				t.Errorf("Location = %q, want /viewer/", resp.Header.Get("Location"))
			}
			if tt.contentType != "" {
				if got := resp.Header.Get("Content-Type"); got != tt.contentType {
					t.Errorf("Content-Type = %q, want %q", got, tt.contentType)
				}
				if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
				}
			}
			if tt.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD body has %d bytes, want none", len(body))
			}
			for _, s := range tt.contains {
				if !strings.Contains(string(body), s) {
					t.Errorf("body does not contain %q", s)
				}
			}
			if strings.HasPrefix(tt.contentType, "text/html") {
				csp := resp.Header.Get("Content-Security-Policy")
				host := strings.TrimPrefix(srv.URL, "http://")
				for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self' ws://" + host} {
					if !strings.Contains(csp, want) {
						t.Errorf("Content-Security-Policy = %q, want it to contain %q", csp, want)
					}
				}
			}
		})
	}
}

func TestHandlerEscapesConfig(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	Handler(Config{Side: SideLocal, APIPrefix: "/v1/", EventsPath: "/v1/events", Title: `<b>"x"</b>`}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/viewer/", nil))
	body := rec.Body.String()
	if strings.Contains(body, "<b>") || !strings.Contains(body, "&lt;b&gt;") {
		t.Errorf("title not escaped in page: %s", body[:min(len(body), 400)])
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"local", Config{Side: SideLocal, APIPrefix: "/v1/", EventsPath: "/v1/events"}, true},
		{"cloud", cloudCfg, true},
		{"no side", Config{APIPrefix: "/v1/", EventsPath: "/v1/events"}, false},
		{"prefix without slash", Config{Side: SideLocal, APIPrefix: "/v1", EventsPath: "/v1/events"}, false},
		{"relative prefix", Config{Side: SideLocal, APIPrefix: "v1/", EventsPath: "/v1/events"}, false},
		{"no events path", Config{Side: SideLocal, APIPrefix: "/v1/"}, false},
		{"quote in path", Config{Side: SideLocal, APIPrefix: `/v1/"/`, EventsPath: "/v1/events"}, false},
		{"other placeholder", Config{Side: SideCloud, APIPrefix: "/v1/{tenant}/", EventsPath: "/v1/events"}, false},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("Handler(invalid config) did not panic")
		}
	}()
	Handler(Config{})
}

// TestDOMContract: the ids and classes tests and the docs rely on are there,
// and the script talks to the documented endpoints.
func TestDOMContract(t *testing.T) {
	t.Parallel()
	html := string(mustRead("static/index.html"))
	js := string(mustRead("static/app.js"))
	for _, id := range []string{
		"editor", "save", "close", "edit-anyway", "view-only", "lock-dialog", "unfenced-warning",
		"idle-warning", "collection", "user", "rows", "status", "error", "conn",
		"search", "search-q", "search-by", "search-go", "more", "detail", "crumbs", "detail-title", "detail-sync",
		"detail-mode", "detail-edit", "detail-history", "detail-fields", "children", "edit-form", "history-panel",
		"history-rows", "diff", "conflict-panel", "conflict-mine", "conflict-other", "resolve-keep-this",
		"resolve-use-copy", "resolve-keep-both", "conflicts", "title",
		"login", "login-username", "login-password", "login-code-row", "login-code", "login-submit", "login-error",
		"totp-enrol", "totp-secret", "totp-url", "totp-enrol-code", "totp-enrol-confirm",
	} {
		if !strings.Contains(html, `id="`+id+`"`) {
			t.Errorf("index.html has no element with id %q", id)
		}
	}
	if !regexp.MustCompile(`<dialog id="lock-dialog"`).MatchString(html) {
		t.Error(`index.html: lock-dialog is not a <dialog>`)
	}
	if !strings.Contains(strings.ToLower(html), "conflict") {
		t.Error("index.html: the lock dialog does not mention the conflict risk")
	}
	for _, opt := range []string{"patients", "studies", "images", "reports"} {
		if !strings.Contains(html, `<option value="`+opt+`"`) {
			t.Errorf("index.html: collection %q not selectable", opt)
		}
	}
	for _, s := range []string{
		"tr.dataset.id", "edit.className = 'edit'", "'patients/search?'", "'/versions'", "'/rollback'",
		"'Editing by me'", "clinic_name", "SAVED_SHOWN_MS", "'?limit=100&parent='", "'/edit'", "'/save'", "'/heartbeat'", "'/close'", "body.anyway = true",
		"'locked'", "'lock_unavailable'", "holder", "access_token", "'since'", "case 'reset'",
		"case 'editing'", "case 'saved'", "case 'closed'", "case 'idle_warning'", "case 'changed'",
		"case 'conflict'", "case 'transfer'", "sync_state === 'conflict'", "heartbeat_ms", "activity",
		"'Idle — closing soon'", "'Editing by '", "'Uploading'", "'Downloading'",
		"'/v1/login'", "'totp_required'", "'totp_invalid'", "body.code = code", "totp_enrolment_required",
		"'/v1/me/totp'", "'/v1/me/totp/confirm'",
	} {
		if !strings.Contains(js, s) {
			t.Errorf("app.js does not contain %q", s)
		}
	}
	// The clinic does not use API tokens on its page (persons log in).
	if strings.Contains(html, `id="token"`) {
		t.Error(`index.html still has the "Access token" field`)
	}
	// Loopback only: nothing may load from elsewhere.
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/`)
	for name, text := range map[string]string{"index.html": html, "app.js": js, "style.css": string(mustRead("static/style.css"))} {
		if m := external.FindString(text); m != "" {
			t.Errorf("%s refers to an external URL %q", name, m)
		}
	}
}

// TestScriptSyntax checks app.js with node --check (the check needs node:
// it fails under CI=true without it, and skips elsewhere).
func TestScriptSyntax(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Unavailable(t, "node", err)
	}
	out, err := exec.Command(node, "--check", filepath.Join("static", "app.js")).CombinedOutput()
	if err != nil {
		t.Fatalf("node --check app.js: %v\n%s", err, out)
	}
}
