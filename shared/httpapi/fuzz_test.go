package httpapi

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// The API's input parsers never panic, and whatever they accept is valid:
// every error is an *Error with a stable code (a 4xx, never a 500).

func apiError(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Code == "" || e.Status < 400 || e.Status >= 500 {
		t.Fatalf("error %v is not a 4xx API error with a code", err)
	}
}

func FuzzImportLine(f *testing.F) {
	f.Add([]byte(`{"kind":"patient","data":{"name":"Kim"}}`))
	f.Add([]byte(`{"kind":"study","data":{"patient_id":"383078181238734848","study_date":"2024-01-01"}}`))
	f.Add([]byte(`{"kind":"image","data":{"study_id":"1","modality":"CBCT","study_date":"2024-01-01","sha256":"` + string(bytes.Repeat([]byte("a"), 64)) + `"}}`))
	f.Add([]byte(`{"kind":"spaceship","data":{}}`))
	f.Add([]byte(`{"kind":"patient","data":{"name":"x"}} {"extra":1}`))
	f.Add([]byte(`{"kind":"patient"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		kind, c, err := DecodeImportLine(line)
		if err != nil {
			apiError(t, err)
			return
		}
		if c == nil || c.Kind() != kind || !wire.KnownKind(kind) {
			t.Fatalf("accepted %q as kind %q with content %#v", line, kind, c)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted invalid content %q: %v", line, err)
		}
	})
}

func FuzzDecodeSave(f *testing.F) {
	f.Add("patients", []byte(`{"data":{"name":"Kim"},"base_version":"1.0"}`))
	f.Add("studies", []byte(`{"data":{"patient_id":"5","study_date":"2024-02-30"}}`))
	f.Add("images", []byte(`{"data":{"study_id":"5","modality":"PANO","tags":["a"]}}`))
	f.Add("reports", []byte(`{"data":null}`))
	f.Add("patients", []byte(`{"data":{"name":"Kim"},"base_version":"01.0"}`))
	f.Add("settings", []byte(`[]`))
	f.Fuzz(func(t *testing.T, collection string, body []byte) {
		spec, ok := records.SpecOfTable(collection)
		if !ok {
			return
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/"+url.PathEscape(collection), bytes.NewReader(body))
		req, c, err := DecodeSave(httptest.NewRecorder(), r, spec)
		if err != nil {
			apiError(t, err)
			return
		}
		if c == nil || c.Kind() != spec.Kind || c.Validate() != nil {
			t.Fatalf("accepted %q for %s as %#v", body, collection, c)
		}
		if req.BaseVersion != nil && req.BaseVersion.IsZero() {
			t.Fatalf("accepted a zero base version in %q", body)
		}
	})
}

func FuzzParseList(f *testing.F) {
	f.Add("patients", "limit=10&after=383078181238734848")
	f.Add("studies", "parent=5&updated_since=2026-01-02T03:04:05Z&deleted=true")
	f.Add("images", "limit=0")
	f.Add("images", "limit=100000&after=-1")
	f.Add("reports", "updated_since=yesterday")
	f.Add("patients", "base_version=1.0")
	f.Fuzz(func(t *testing.T, collection, query string) {
		spec, ok := records.SpecOfTable(collection)
		if !ok {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "/v1/"+url.PathEscape(collection), nil)
		r.URL.RawQuery = query
		p, err := ParseList(r, spec)
		if err != nil {
			apiError(t, err)
		} else if p.Limit < 1 || p.Limit > 1000 || p.After < 0 || p.Parent < 0 {
			t.Fatalf("accepted %q as %+v", query, p)
		}
		if v, err := BaseVersionParam(r); err != nil {
			apiError(t, err)
		} else if v != nil && v.IsZero() {
			t.Fatalf("accepted a zero base_version in %q", query)
		}
	})
}
