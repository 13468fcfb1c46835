package httpapi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
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

// saveRequest is a POST of body to collection's route, with its spec; ok
// is false for a collection that has none.
func saveRequest(collection string, body []byte) (records.Spec, *http.Request, bool) {
	spec, ok := records.SpecOfTable(collection)
	if !ok {
		return spec, nil, false
	}
	return spec, httptest.NewRequest(http.MethodPost, "/v1/"+url.PathEscape(collection), bytes.NewReader(body)), true
}

func FuzzDecodeSave(f *testing.F) {
	f.Add("patients", []byte(`{"data":{"name":"Kim"},"base_version":"1.0"}`))
	f.Add("studies", []byte(`{"data":{"patient_id":"5","study_date":"2024-02-30"}}`))
	f.Add("images", []byte(`{"data":{"study_id":"5","modality":"PANO","tags":["a"]}}`))
	f.Add("reports", []byte(`{"data":null}`))
	f.Add("patients", []byte(`{"data":{"name":"Kim"},"base_version":"01.0"}`))
	f.Add("settings", []byte(`[]`))
	f.Fuzz(func(t *testing.T, collection string, body []byte) {
		spec, r, ok := saveRequest(collection, body)
		if !ok {
			return
		}
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

// DecodeSave's one pass (decodeSaveOnce) takes a body only when reading it
// twice, the body then its data (decodeSaveTwice), takes it too, with the
// same request and content; everything else gets decodeSaveTwice's answer.
func FuzzDecodeSaveOnce(f *testing.F) {
	for _, b := range []string{
		`{"data":{"name":"Kim","notes":"x"}}`,
		`{"data":{"name":"Kim"},"base_version":"1.0"}`,
		` { "base_version" : "2.1" , "data" :	{"name":"Kim"} } `,
		`{"data":{"name":"Kim"},"data":{"name":"Lee"}}`,
		`{"data":{"name":"Kim","notes":"a"},"data":{"name":"Lee"}}`,
		`{"Data":{"name":"Kim"}}`,
		`{"d\u0061ta":{"name":"Kim"}}`,
		`{"data":{"name":"Kim","NAME":"Lee"}}`,
		`{"data":{"name":"Kim"},"base_version":null}`,
		`{"data":{"name":"Kim"},"base_version":"0.0"}`,
		`{"data":{"name":"Kim"},"base_version":"1.0","base_version":"2.0"}`,
		`{"data":{"name":"Kim"}}}`,
		`{"data":{"name":"Kim"}} {}`,
		`{"data":{"name":"Kim"}`,
		`{"data":{"name":"Kim","extra":1}}`,
		`{"data":{"name":""}}`,
		`{"data":null}`,
		`{"data":{"name":"Kim"},"other":1}`,
		`{}`,
		`[]`,
		``,
		`{"data":{"key":"k","value":{"a":[1,2]}}}`,
	} {
		f.Add("patients", []byte(b))
		f.Add("settings", []byte(b))
	}
	f.Add("studies", []byte(`{"data":{"patient_id":"5","study_date":"2024-02-03"}}`))
	f.Fuzz(func(t *testing.T, collection string, body []byte) {
		spec, r, ok := saveRequest(collection, body)
		if !ok {
			return
		}
		req, c, err := DecodeSave(httptest.NewRecorder(), r, spec)
		wantReq, wantC, wantErr := decodeSaveTwice(bytes.NewReader(body), spec)
		if !reflect.DeepEqual(err, wantErr) {
			t.Fatalf("DecodeSave(%s, %q) error = %v, want %v", collection, body, err, wantErr)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(c, wantC) || !bytes.Equal(req.Data, wantReq.Data) || !reflect.DeepEqual(req.BaseVersion, wantReq.BaseVersion) {
			t.Fatalf("DecodeSave(%s, %q) = %+v %#v, want %+v %#v", collection, body, req, c, wantReq, wantC)
		}
	})
}

// The common body takes the one pass (FuzzDecodeSaveOnce checks it agrees).
func TestDecodeSaveOnceTakesTheCommonBody(t *testing.T) {
	spec, _ := records.SpecOf(wire.KindPatient)
	for _, body := range []string{
		`{"data":{"name":"Kim","chart_no":"C-1","notes":"` + strings.Repeat("n", 900) + `"}}`,
		`{"base_version":"3.1","data":{"name":"Kim"}}`,
	} {
		if _, c, ok := decodeSaveOnce([]byte(body), spec); !ok || c.(records.Patient).Name != "Kim" {
			t.Errorf("decodeSaveOnce(%.40q) = %v, %v; want the patient, true", body, c, ok)
		}
	}
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

// BenchmarkDecodeSave reads the replication benchmark's body (a patient of
// about 1 KB) both ways: one pass (DecodeSave) and the body then its data
// (decodeSaveTwice, as before). Per op: the body's read and decoding only.
func BenchmarkDecodeSave(b *testing.B) {
	spec, _ := records.SpecOf(wire.KindPatient)
	body := []byte(`{"data":{"chart_no":"B-000001","name":"Bench Patient 1","birth_date":"1980-01-01","sex":"F","phone":"555-0100","notes":"` +
		strings.Repeat("x", 900) + `"}}`)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/v1/patients", nil)
	r.ContentLength = int64(len(body))
	b.Run("flat", func(b *testing.B) { // DecodeSave: this body takes decodeSaveFlat
		b.ReportAllocs()
		for b.Loop() {
			r.Body = io.NopCloser(bytes.NewReader(body))
			if _, _, err := DecodeSave(w, r, spec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("once", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, ok := decodeSaveOnce(body, spec); !ok {
				b.Fatal("decodeSaveOnce refused the body")
			}
		}
	})
	b.Run("twice", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Body = io.NopCloser(bytes.NewReader(body))
			if _, _, err := decodeSaveTwice(http.MaxBytesReader(w, r.Body, MaxBody), spec); err != nil {
				b.Fatal(err)
			}
		}
	})
}
