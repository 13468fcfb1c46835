package records

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

// TestDecodeFlat: the plain objects DecodeFlat takes, and what it leaves
// to encoding/json (each checked against it, and Decode too, by checkFlat).
func TestDecodeFlat(t *testing.T) {
	if flatKinds[wire.KindPatient] == nil {
		t.Fatal("DecodeFlat does not read patients")
	}
	for _, k := range []Content{Study{}, Setting{}, Image{}} {
		if flatKinds[k.Kind()] != nil {
			t.Errorf("flatKinds has %s, whose content is not only strings", k.Kind())
		}
	}
	notes := strings.Repeat("n", 900)
	tests := []struct {
		body string
		take bool
	}{
		{`{"chart_no":"C-1","name":"Kim","notes":"` + notes + `"}`, true},
		{`{"name":"Kim"}`, true},
		{` { "name" : "Kim" ,	"sex":"F" } `, true},
		{`{"name":"김민지 Zoë","notes":"\u2028 <&>"}`, false}, // an escape
		{`{"name":"김민지 Zoë","notes":"` + "\u2028 <&>" + `"}`, true},
		{`{"name":"Kim","name":"Lee"}`, false},
		{`{"NAME":"Kim"}`, false},
		{`{"name":"Kim","extra":"x"}`, false},
		{`{"name":"Kim","notes":null}`, false},
		{`{"name":"Kim","notes":1}`, false},
		{`{"name":"Kim\n"}`, false},
		{"{\"name\":\"Kim\xff\"}", false},
		{`{"name":""}`, false}, // invalid: Decode gives the error
		{`{"name":"Kim",}`, false},
		{`{"name":"Kim"} `, true},  // Decode allows the blanks after it
		{`{"name":"Kim"} x`, true}, // Decode refuses the rest
		{`{"name":"Kim"}{}`, true},
		{`{"name":"Kim"`, false},
		{`{}`, false},
		{`[]`, false},
		{``, false},
	}
	for _, tt := range tests {
		c, _, ok := DecodeFlat(wire.KindPatient, []byte(tt.body))
		if ok != tt.take {
			t.Errorf("DecodeFlat(patient, %.60q) ok = %v, want %v (%#v)", tt.body, ok, tt.take, c)
		}
		checkFlat(t, wire.KindPatient, []byte(tt.body))
	}
	// Every kind's sample, as json.Marshal writes it.
	for i, spec := range Kinds {
		b, err := json.Marshal(Sample(spec.Kind, i, map[wire.Kind]ids.ID{wire.KindPatient: 1, wire.KindStudy: 2}))
		if err != nil {
			t.Fatal(err)
		}
		want := flatKinds[spec.Kind] != nil && !bytes.ContainsRune(b, '\\') // an escape is Decode's
		if _, _, ok := DecodeFlat(spec.Kind, b); ok != want {
			t.Errorf("DecodeFlat(%s, its sample %s) ok = %v", spec.Kind, b, ok)
		}
		checkFlat(t, spec.Kind, b)
	}
}

// checkFlat fails when DecodeFlat takes b and encoding/json (decodeStrict)
// reads the object otherwise, when it does not end where the object ends,
// or when Decode, which reads with DecodeFlat first, gives b another
// content or another error than decodeStrict.
func checkFlat(t *testing.T, k wire.Kind, b []byte) {
	t.Helper()
	want, wantErr := decodeStrict(k, b)
	got, err := Decode(k, b)
	if !reflect.DeepEqual(got, want) || fmt.Sprint(err) != fmt.Sprint(wantErr) {
		t.Fatalf("Decode(%s, %q) = %#v, %v; want encoding/json's %#v, %v", k, b, got, err, want, wantErr)
	}
	c, n, ok := DecodeFlat(k, b)
	if !ok {
		return
	}
	want, err = decodeStrict(k, b[:n])
	if err != nil {
		t.Fatalf("DecodeFlat(%s, %q) = %#v, but encoding/json refuses it: %v", k, b, c, err)
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("DecodeFlat(%s, %q) = %#v, want encoding/json's %#v", k, b, c, want)
	}
	if rest := bytes.TrimLeft(b[n:], " \t\r\n"); len(rest) > 0 && json.Valid(b) {
		t.Fatalf("DecodeFlat(%s, %q) ended at %d, before the object's end", k, b, n)
	}
}

// FuzzDecodeFlat: whatever DecodeFlat takes, encoding/json reads as the
// same content, and Decode gives what encoding/json gives.
func FuzzDecodeFlat(f *testing.F) {
	for i, spec := range Kinds {
		b, _ := json.Marshal(Sample(spec.Kind, i, map[wire.Kind]ids.ID{wire.KindPatient: 1, wire.KindStudy: 2}))
		f.Add(string(spec.Kind), b)
	}
	for _, b := range []string{
		`{"chart_no":"C-1","name":"Kim","birth_date":"1980-02-29","sex":"F","phone":"010","notes":"x"}`,
		` { "name" : "Kim" } `, `{"name":"Kim","name":"Lee"}`, `{"name":"Kim","Name":"Lee"}`, `{"name":"Ki\u006d"}`,
		`{"name":"김"}`, "{\"name\":\"\xed\xa0\x80\"}", `{"name":"Kim"}}`, `{"name":"Kim"} x`,
	} {
		f.Add("patient", []byte(b))
		f.Add("doctor", []byte(b))
	}
	f.Fuzz(func(t *testing.T, kind string, b []byte) {
		if _, ok := SpecOf(wire.Kind(kind)); !ok {
			return
		}
		checkFlat(t, wire.Kind(kind), b)
	})
}

// selfDecoding has only string fields but decodes itself: not flat.
type selfDecoding struct {
	Name string `json:"name"`
}

func (s *selfDecoding) UnmarshalJSON([]byte) error { s.Name = "mine"; return nil }

func TestFlatOfLeavesSelfDecodingTypes(t *testing.T) {
	if flatOf(reflect.TypeFor[selfDecoding]()) != nil {
		t.Error("flatOf(a type with UnmarshalJSON) is flat, want nil")
	}
	if flatOf(reflect.TypeFor[Patient]()) == nil {
		t.Error("flatOf(Patient) = nil, want flat")
	}
}
