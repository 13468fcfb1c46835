package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/buildinfo"
)

func TestWriteError(t *testing.T) {
	tests := []struct {
		err        error
		wantStatus int
		wantCode   string
	}{
		{Errorf(http.StatusNotFound, CodeNotFound, "patient %d not found", 7), 404, CodeNotFound},
		{errors.New("secret db detail"), 500, CodeInternal},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		WriteError(rec, slog.New(slog.NewTextHandler(io.Discard, nil)), tt.err)
		var body Error
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if rec.Code != tt.wantStatus || body.Code != tt.wantCode || body.Message == "" {
			t.Errorf("WriteError(%v) = %d %+v, want %d %s", tt.err, rec.Code, body, tt.wantStatus, tt.wantCode)
		}
		if strings.Contains(rec.Body.String(), "secret") {
			t.Errorf("internal error text leaked: %s", rec.Body.String())
		}
	}
}

// TestWriteJSON: an answer carries its Content-Length and the encoding's
// bytes; a value that cannot be encoded answers 500 with code internal,
// not the status asked for with a cut body.
func TestWriteJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteJSON(rec, http.StatusCreated, map[string]string{"id": "7"})
	if rec.Code != http.StatusCreated || rec.Body.String() != `{"id":"7"}`+"\n" ||
		rec.Header().Get("Content-Length") != "11" || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("WriteJSON = %d %q, headers %v", rec.Code, rec.Body.String(), rec.Header())
	}
	rec = httptest.NewRecorder()
	WriteJSON(rec, http.StatusOK, map[string]any{"bad": make(chan int)})
	var body Error
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("answer to an unencodable value: %v (%q)", err, rec.Body.String())
	}
	if rec.Code != http.StatusInternalServerError || body.Code != CodeInternal {
		t.Errorf("unencodable value: %d %+v, want 500 %s", rec.Code, body, CodeInternal)
	}
}

func TestDecode(t *testing.T) {
	type in struct {
		Name string `json:"name"`
	}
	tests := []struct {
		body string
		code string
	}{
		{`{"name":"a"}`, ""},
		{``, CodeBadRequest},
		{`{"nme":"a"}`, CodeBadRequest},
		{`{"name":"a"} {}`, CodeBadRequest},
		{`{"name":"` + strings.Repeat("x", MaxBody) + `"}`, CodeTooLarge},
	}
	for _, tt := range tests {
		var v in
		r := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
		err := Decode(httptest.NewRecorder(), r, &v)
		var e *Error
		switch {
		case tt.code == "" && err != nil:
			t.Errorf("Decode(%.20q) = %v, want nil", tt.body, err)
		case tt.code != "" && (!errors.As(err, &e) || e.Code != tt.code):
			t.Errorf("Decode(%.20q) = %v, want code %s", tt.body, err, tt.code)
		}
	}
}

func TestHealth(t *testing.T) {
	h := NewHealth()
	h.Add("good", func(context.Context) error { return nil })
	h.Add("broker", func(context.Context) error { return errors.New("connection refused") })
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(Recover(slog.Default(), mux))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz = %v, %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r Readiness
	_ = json.NewDecoder(resp.Body).Decode(&r)
	if resp.StatusCode != 503 || r.Status != "unavailable" || len(r.Down) != 1 || r.Down[0] != "broker" || r.Checks["good"] != "ok" {
		t.Fatalf("/readyz = %d %+v, want 503 naming broker", resp.StatusCode, r)
	}
	if want := buildinfo.Read().Release(); r.Build != want || r.Build.Version == "" || r.Build.Go == "" {
		t.Errorf("/readyz build = %+v, want %+v", r.Build, want)
	}
}

func TestRecover(t *testing.T) {
	h := Recover(slog.New(slog.NewTextHandler(io.Discard, nil)), http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), CodeInternal) {
		t.Fatalf("panic → %d %s, want 500 internal", rec.Code, rec.Body.String())
	}
}
