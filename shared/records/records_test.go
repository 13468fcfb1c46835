package records

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

func TestPatientValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Patient
		ok   bool
	}{
		{"minimal", Patient{Name: "Kim Minji"}, true},
		{"full", Patient{ChartNo: "C-1", Name: "Lee", BirthDate: "1980-02-29", Sex: "F", Phone: "010", Notes: "x"}, true},
		{"blank name", Patient{Name: "  "}, false},
		{"long name", Patient{Name: strings.Repeat("가", 201)}, false},
		{"bad date", Patient{Name: "a", BirthDate: "1980-02-30"}, false},
		{"bad sex", Patient{Name: "a", Sex: "X"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", tt.p, err, tt.ok)
			}
		})
	}
}

func TestEveryKindRegistered(t *testing.T) {
	parents := map[wire.Kind]ids.ID{}
	for i, spec := range Kinds {
		if got, ok := SpecOf(spec.Kind); !ok || got.Table != spec.Table {
			t.Fatalf("SpecOf(%s) = %+v, %v", spec.Kind, got, ok)
		}
		if got, ok := SpecOfTable(spec.Table); !ok || got.Kind != spec.Kind {
			t.Fatalf("SpecOfTable(%s) = %+v, %v", spec.Table, got, ok)
		}
		if spec.Parent != "" && parents[spec.Parent] == 0 {
			t.Fatalf("%s is listed before its parent %s", spec.Kind, spec.Parent)
		}
		c := Sample(spec.Kind, i, parents)
		if c == nil || c.Kind() != spec.Kind {
			t.Fatalf("Sample(%s) = %#v", spec.Kind, c)
		}
		b, _ := json.Marshal(c)
		got, err := Decode(spec.Kind, b)
		if err != nil {
			t.Fatalf("Decode(%s, %s) = %v", spec.Kind, b, err)
		}
		if b2, _ := json.Marshal(got); string(b2) != string(b) {
			t.Fatalf("%s round trip: %s, want %s", spec.Kind, b2, b)
		}
		parents[spec.Kind] = ids.ID(1000 + i)
	}
	if _, ok := SpecOf("spaceship"); ok {
		t.Fatal("SpecOf accepted an unknown kind")
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name    string
		kind    wire.Kind
		payload string
	}{
		{"unknown field", wire.KindPatient, `{"name":"a","evil":1}`},
		{"trailing data", wire.KindPatient, `{"name":"a"}{}`},
		{"not an object", wire.KindDoctor, `["x"]`},
		{"study without patient", wire.KindStudy, `{"study_date":"2026-01-02"}`},
		{"image with bad modality", wire.KindImage, `{"study_id":"5","modality":"XRAY","study_date":"2026-01-02"}`},
		{"image with bad sha", wire.KindImage, `{"study_id":"5","modality":"PANO","study_date":"2026-01-02","sha256":"abc"}`},
		{"user with bad username", wire.KindUser, `{"username":"Bad Name","role":"staff"}`},
		{"user with bad role", wire.KindUser, `{"username":"kim","role":"god"}`},
		{"setting without JSON value", wire.KindSetting, `{"key":"a.b"}`},
		{"report with bad status", wire.KindReport, `{"study_id":"5","title":"t","status":"sent"}`},
		{"project file without name", wire.KindProjectFile, `{"study_id":"5"}`},
		{"negative size", wire.KindCapture, `{"study_id":"5","size":-1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.kind, []byte(tt.payload)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode(%s, %s) = %v, want ErrInvalid", tt.kind, tt.payload, err)
			}
		})
	}
}

func TestDigestCoversState(t *testing.T) {
	p := Patient{Name: "a"}
	at := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	base := Digest(version.First, false, 0, at, p)
	for name, d := range map[string]string{
		"version":     Digest(version.V{A: 2}, false, 0, at, p),
		"tombstone":   Digest(version.First, true, 0, at, p),
		"conflict_of": Digest(version.First, false, 7, at, p),
		"content":     Digest(version.First, false, 0, at, Patient{Name: "b"}),
		"created_at":  Digest(version.First, false, 0, at.Add(time.Second), p),
	} {
		if d == base {
			t.Errorf("Digest ignores %s", name)
		}
	}
	if Digest(version.First, true, 0, at, p) == Digest(version.First, true, 0, at, Patient{Name: "b"}) {
		t.Error("Digest ignores a tombstone's content")
	}
	if Digest(version.First, false, 0, at, p) != base {
		t.Error("Digest is not deterministic")
	}
}

// FuzzDecode: any payload either decodes into valid content that survives
// a round trip, or is refused with ErrInvalid; nothing panics.
func FuzzDecode(f *testing.F) {
	for i, spec := range Kinds {
		b, _ := json.Marshal(Sample(spec.Kind, i, map[wire.Kind]ids.ID{wire.KindPatient: 1, wire.KindStudy: 2}))
		f.Add(string(spec.Kind), b)
	}
	f.Add("patient", []byte(`{"name":"a","evil":1}`))
	f.Add("setting", []byte(`{"key":"a.b","value":{"x":[1,2]}}`))
	f.Fuzz(func(t *testing.T, kind string, payload []byte) {
		k := wire.Kind(kind)
		if _, ok := SpecOf(k); !ok {
			return
		}
		c, err := Decode(k, payload)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode error %v does not wrap ErrInvalid", err)
			}
			return
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := Decode(k, b); err != nil {
			t.Fatalf("re-decode of %s: %v", b, err)
		}
	})
}
