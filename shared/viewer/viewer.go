// Package viewer is the web page both servers serve (M11, M13–M16, M18,
// issue 21; docs/viewer.md describes it for people): find a patient by
// name, chart number or birth date; browse patient → studies → images and
// reports; each record's sync state and live mode badge ("Editing by cloud
// (dr.kim)", "Editing by me", "Saved", "Closed (idle)", "Uploading 45%",
// "Conflict"); a form editor generated from the record kind's fields (Kinds)
// that takes the record's lock through the server; version history with a
// diff and rollback; and keep-both conflicts side by side with a way to
// resolve them.
//
// The page is plain HTML, CSS and dependency-free JavaScript embedded in the
// binary; it loads nothing from elsewhere. Handler serves it at whatever
// path it is mounted on (it only looks at the last path element), so
//
//	mux.Handle("GET /viewer/", viewer.Handler(viewer.Config{…}))
//
// serves /viewer/ (the page; ServeMux redirects /viewer there), and
// /viewer/app.js and /viewer/style.css.
//
// # Configuration and URL
//
// Config.APIPrefix and Config.EventsPath may contain {clinic}, which the page
// replaces with the clinic query parameter:
//
//	sc-local:  http://host/viewer/            Config{Side: "local", APIPrefix: "/v1/", EventsPath: "/v1/events"}
//	sc-cloud:  http://host/viewer/?clinic=ID  Config{Side: "cloud", APIPrefix: "/v1/clinics/{clinic}/", EventsPath: "/v1/clinics/{clinic}/events"}
//
// The title is Config.Title until the login: then the clinic's name that
// GET /v1/me answers (clinic_name) with "scsync clinic" or "scsync cloud".
//
// # Login
//
// The page asks GET /v1/me who is logged in; on 401 it shows the login form
// (#login with #login-username, #login-password, #login-submit and
// #login-error) and posts POST /v1/login {"username","password"[,"clinic"]}.
// The server answers with an HttpOnly, SameSite=Strict session cookie that
// REST calls and the WebSocket carry; the page never holds the session.
// Any later 401 (the session went idle) brings the form back; #logout ends
// the session. In the cloud, a person with a TOTP second factor is asked for
// its code: when the login answers {"code":"totp_required"} (or
// totp_invalid) the page shows #login-code-row and sends the #login-code
// value as "code" with the next attempt. Under auth.require_totp a person
// without a factor gets a session that may only enrol one: GET /v1/me says
// totp_enrolment_required, and the page shows the #totp-enrol form (POST
// /v1/me/totp for the key, #totp-secret and the #totp-url otpauth link;
// #totp-enrol-code and #totp-enrol-confirm post /v1/me/totp/confirm). An
// operator's API token may still be given in the URL fragment #token=TOK,
// which browsers never send to a server: the page keeps it in
// sessionStorage, removes the fragment, and sends it as "Authorization:
// Bearer" and as the events URL's access_token. There is no token field.
//
// # REST API the page uses ({p} = APIPrefix, {c} = collection)
//
//	GET  {p}patients/search?q=&by=&limit=50&after=   → {"items":[patient…],"by","next"}
//	GET  {p}{c}?limit=50[&after=][&parent=ID]        → {"items":[record…],"next":"…"}
//	GET  {p}{c}?sync_state=conflict (clinic) | ?conflict=true (cloud)
//	GET  {p}{c}/{id}             → record
//	GET  {p}{c}/{id}/versions    → {"items":[version…]}
//	GET  {p}{c}/{id}/versions/{v} → {"version","data"}
//	POST {p}{c}/{id}/edit        {"client"[,"anyway":true]}
//	                             → 200 {"session","fence","version","expires_at","unfenced","heartbeat_ms","idle_warn_after_ms",…}
//	                             → 409 {"code":"locked","holder":{"side","user"}}
//	                             → 503 {"code":"lock_unavailable","options":["edit_anyway","view_only"]}
//	POST {p}{c}/{id}/heartbeat   {"session","activity"}   every heartbeat_ms while open
//	POST {p}{c}/{id}/save        {"session","data"} → {"session","version","record"}
//	POST {p}{c}/{id}/rollback    {"session","version"} → {"session","version","record"}
//	POST {p}{c}/{id}/close       {"session"}
//	DELETE {p}{c}/{id}?base_version=V   (a conflict copy not kept)
//
// A record is {"id","kind","version","origin","deleted","sync_state" (clinic)
// or "conflict" (cloud),"conflict_of","data"}. Errors are {"code","message"}
// and are shown as text; a heartbeat or save answered 404 no_session or 409
// lock_lost ends the session (the form keeps its content). Leaving the page
// closes the session. Rollback and conflict resolution save through a
// one-save edit session of their own (or the one open on the record).
//
// # Live events
//
// The page opens a WebSocket on EventsPath?since=<last seq>&access_token=…,
// reconnects with backoff and resumes; on reset it reloads the list, and the
// server follows the reset with the editing event of every open session
// (events.Hub), so who is editing shows on load. The mode texts mirror
// events.Label; "Saved" stays a minute after a save.
//
// # DOM contract (for tests)
//
// Each record row is <tr data-kind="KIND" data-id="ID"> with cells of class
// title (a link opening the record), version, sync and mode, and buttons of
// class open and edit; the list is #rows (#more loads the next page), the
// search form #search with #search-q, #search-by and #search-go. The record
// view is #detail (#crumbs, #detail-title, #detail-sync, #detail-mode,
// #detail-edit, #detail-history, #detail-fields, #children with a table per
// child kind). The editor is the form #edit-form (an input #field-NAME per
// field) with the JSON textarea #editor (its content wins when edited),
// buttons #save and #close; #unfenced-warning and #idle-warning are banners;
// the lock-unavailable choice is the <dialog id="lock-dialog"> with buttons
// #edit-anyway and #view-only. History is #history-panel: rows
// <tr data-version="A.B"> in #history-rows with buttons diff and rollback;
// #diff the comparison. A conflict is #conflict-panel (#conflict-mine,
// #conflict-other, #resolve-keep-this, #resolve-use-copy,
// #resolve-keep-both). #collection selects a kind, #conflicts lists its
// conflicts, #user shows who is logged in, #status and #error show
// messages, #conn the live state.
package viewer

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"path"
	"regexp"
	"strings"
)

// Sides.
const (
	SideLocal = "local"
	SideCloud = "cloud"
)

// Config is what the page needs to know about the server serving it.
type Config struct {
	// Side is "local" (sc-local) or "cloud" (sc-cloud).
	Side string
	// APIPrefix is where the record collections are, ending in "/":
	// "/v1/" or "/v1/clinics/{clinic}/".
	APIPrefix string
	// EventsPath is the events WebSocket path: "/v1/events" or
	// "/v1/clinics/{clinic}/events".
	EventsPath string
	// Title is the page title; default "scsync viewer (<side>)".
	Title string
}

// ErrInvalidConfig wraps every Config validation error.
var ErrInvalidConfig = errors.New("viewer: invalid config")

// pathRE: an absolute URL path of safe characters, {clinic} allowed.
var pathRE = regexp.MustCompile(`^/[A-Za-z0-9._~/{}-]*$`)

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	switch {
	case c.Side != SideLocal && c.Side != SideCloud:
		return fmt.Errorf("side %q, want %q or %q: %w", c.Side, SideLocal, SideCloud, ErrInvalidConfig)
	case !pathRE.MatchString(c.APIPrefix) || !strings.HasSuffix(c.APIPrefix, "/"):
		return fmt.Errorf("API prefix %q, want an absolute path ending in /: %w", c.APIPrefix, ErrInvalidConfig)
	case !pathRE.MatchString(c.EventsPath):
		return fmt.Errorf("events path %q, want an absolute path: %w", c.EventsPath, ErrInvalidConfig)
	}
	for _, p := range []string{c.APIPrefix, c.EventsPath} {
		if strings.Count(p, "{") != strings.Count(p, "{clinic}") || strings.Count(p, "}") != strings.Count(p, "{clinic}") {
			return fmt.Errorf("path %q: the only placeholder is {clinic}: %w", p, ErrInvalidConfig)
		}
	}
	return nil
}

//go:embed static
var static embed.FS

var page = template.Must(template.ParseFS(static, "static/index.html"))

// asset is a static file with its content type.
type asset struct {
	body        []byte
	contentType string
}

// Handler serves the page for cfg. It panics if cfg is invalid (call
// cfg.Validate first to report the error instead), like http.Handle does
// for a bad pattern: this is fixed at startup.
func Handler(cfg Config) http.Handler {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	if cfg.Title == "" {
		cfg.Title = "scsync viewer (" + cfg.Side + ")"
	}
	var index bytes.Buffer
	data := struct {
		Config
		Kinds string
	}{cfg, kindsJSON()}
	if err := page.Execute(&index, data); err != nil {
		panic(fmt.Errorf("viewer: render page: %w", err))
	}
	assets := map[string]asset{
		"index.html": {index.Bytes(), "text/html; charset=utf-8"},
		"app.js":     {mustRead("static/app.js"), "text/javascript; charset=utf-8"},
		"style.css":  {mustRead("static/style.css"), "text/css; charset=utf-8"},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := path.Base(r.URL.Path)
		if strings.HasSuffix(r.URL.Path, "/") {
			name = "index.html"
		}
		a, ok := assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		h.Set("Referrer-Policy", "no-referrer")
		if name == "index.html" {
			h.Set("Content-Security-Policy", csp(r.Host))
			h.Set("X-Frame-Options", "DENY")
		}
		h.Set("Content-Length", fmt.Sprint(len(a.body)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(a.body)
		}
	})
}

func mustRead(name string) []byte {
	b, err := static.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

// hostRE is a Host header safe to put into a header value.
var hostRE = regexp.MustCompile(`^[A-Za-z0-9.\-\[\]:]+$`)

// csp allows only this origin, including its WebSocket (some browsers do not
// count ws: as 'self').
func csp(host string) string {
	connect := "'self'"
	if hostRE.MatchString(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src " + connect +
		"; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}
