package auth

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/httpapi"
)

func TestPasswordHash(t *testing.T) {
	t.Parallel()
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$") || strings.Contains(h, "correct horse") {
		t.Fatalf("HashPassword = %q, want an argon2id hash", h)
	}
	if !CheckPassword(h, "correct horse") {
		t.Error("CheckPassword(right) = false")
	}
	for _, bad := range []string{"correct horsE", "", "correct horse "} {
		if CheckPassword(h, bad) {
			t.Errorf("CheckPassword(%q) = true", bad)
		}
	}
	for _, broken := range []string{"", "$argon2id$v=19$m=1,t=1,p=1$$", "plain"} {
		if CheckPassword(broken, "x") {
			t.Errorf("CheckPassword on hash %q = true", broken)
		}
	}
	if _, err := HashPassword("short"); err == nil {
		t.Error("HashPassword(short) succeeded")
	}
}

func TestRoles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule Rule
		p    Principal
		want bool
	}{
		{Rule{Min: RoleViewer}, Principal{Kind: KindPerson, Role: RoleViewer}, true},
		{Rule{Min: RoleEditor}, Principal{Kind: KindPerson, Role: RoleViewer}, false},
		{Rule{Min: RoleAdmin}, Principal{Kind: KindPerson, Role: RoleEditor}, false},
		{Rule{Min: RoleViewer}, Principal{Kind: KindMachine}, false},
		{Rule{Min: RoleNone, Machine: true}, Principal{Kind: KindMachine}, true},
		{Rule{Min: RoleNone, Machine: true}, Principal{Kind: KindPerson, Role: RoleAdmin}, false},
		{Rule{}, Principal{Kind: KindOperator}, true},
		{Rule{Min: RoleViewer}, Principal{}, false},
	}
	for _, tt := range tests {
		if got := Allowed(tt.rule, tt.p); got != tt.want {
			t.Errorf("Allowed(%+v, %+v) = %v, want %v", tt.rule, tt.p, got, tt.want)
		}
	}
	if ParseRole("doctor") != RoleEditor || ParseRole("nobody") != RoleNone {
		t.Error("ParseRole maps older roles wrong")
	}
}

// TestGuard: a route without a rule is refused even to an admin; a public
// route needs nothing; a cross-origin or non-JSON state change is refused.
func TestGuard(t *testing.T) {
	t.Parallel()
	mux := httpapi.NewMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }
	mux.HandleFunc("GET /open", ok)
	mux.HandleFunc("POST /write", ok)
	mux.HandleFunc("GET /forgotten", ok)
	admin := func(r *http.Request) (Principal, error) {
		if r.Header.Get("Authorization") == "" {
			return Principal{}, ErrNoCredentials
		}
		return Principal{Kind: KindPerson, Role: RoleAdmin}, nil
	}
	g := NewGuard(mux, Policy{"GET /open": {Public: true}, "POST /write": {Min: RoleEditor}}, admin, slog.New(slog.DiscardHandler))
	tests := []struct {
		name, method, path, ctype, origin, site string
		auth                                    bool
		want                                    int
	}{
		{"public", "GET", "/open", "", "", "", false, 204},
		{"no rule", "GET", "/forgotten", "", "", "", true, 403},
		{"anonymous write", "POST", "/write", "application/json", "", "", false, 401},
		{"write", "POST", "/write", "application/json", "", "", true, 204},
		{"text/plain write", "POST", "/write", "text/plain", "", "", true, 415},
		{"cross-origin write", "POST", "/write", "application/json", "http://evil.example", "", true, 403},
		{"cross-site fetch", "POST", "/write", "application/json", "", "cross-site", true, 403},
		{"same-origin write", "POST", "/write", "application/json", "http://example.com", "same-origin", true, 204},
		{"unknown route", "GET", "/nope", "", "", "", true, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body *strings.Reader
			if tt.method == "POST" {
				body = strings.NewReader(`{}`)
			} else {
				body = strings.NewReader("")
			}
			r := httptest.NewRequest(tt.method, "http://example.com"+tt.path, body)
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			if tt.site != "" {
				r.Header.Set("Sec-Fetch-Site", tt.site)
			}
			if tt.auth {
				r.Header.Set("Authorization", "Bearer x")
			}
			w := httptest.NewRecorder()
			g.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, w.Code, w.Body, tt.want)
			}
		})
	}
}
