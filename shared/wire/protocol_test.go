package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestNegotiate(t *testing.T) {
	tests := []struct {
		ours, theirs Range
		want         int
		ok           bool
	}{
		{Range{2, 2}, Range{2, 2}, 2, true},
		{Range{2, 3}, Range{2, 2}, 2, true},
		{Range{2, 2}, Range{2, 3}, 2, true},
		{Range{2, 4}, Range{3, 5}, 4, true},
		{Range{3, 4}, Range{2, 2}, 0, false},
		{Range{2, 2}, Range{3, 3}, 0, false},
		{Range{2, 2}, Range{}, 0, false},
	}
	for _, tt := range tests {
		got, err := Negotiate(tt.ours, tt.theirs)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Negotiate(%s, %s) = %d, %v; want %d, ok %v", tt.ours, tt.theirs, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrProtocol) {
			t.Errorf("Negotiate(%s, %s) error %v is not ErrProtocol", tt.ours, tt.theirs, err)
		}
	}
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		min, max string
		want     Range
		stated   bool
		ok       bool
	}{
		{"", "", Legacy(), false, true},
		{"2", "3", Range{2, 3}, true, true},
		{" 2", "2 ", Range{2, 2}, true, true},
		{"3", "2", Legacy(), true, false},
		{"0", "2", Legacy(), true, false},
		{"2", "", Legacy(), true, false},
		{"x", "2", Legacy(), true, false},
		{"2", "100000", Legacy(), true, false},
	}
	for _, tt := range tests {
		got, stated, err := ParseRange(tt.min, tt.max)
		if got != tt.want || stated != tt.stated || (err == nil) != tt.ok {
			t.Errorf("ParseRange(%q, %q) = %v, %v, %v; want %v, %v, ok %v", tt.min, tt.max, got, stated, err, tt.want, tt.stated, tt.ok)
		}
	}
	// AMQP delivers header integers as int32 (what Headers sets) or other
	// integer types; HTTP as text.
	for _, h := range []map[string]any{Range{2, 3}.Headers(), {HeaderProtocolMin: int64(2), HeaderProtocolMax: "3"}} {
		if got, stated, err := RangeOfHeaders(h); got != (Range{2, 3}) || !stated || err != nil {
			t.Errorf("RangeOfHeaders(%v) = %v, %v, %v", h, got, stated, err)
		}
	}
	hh := http.Header{}
	Range{2, 5}.SetHTTP(hh)
	if got, stated, err := RangeOfHTTP(hh); got != (Range{2, 5}) || !stated || err != nil {
		t.Errorf("RangeOfHTTP(SetHTTP(2-5)) = %v, %v, %v", got, stated, err)
	}
	if got, stated, err := RangeOfHTTP(http.Header{}); got != Legacy() || stated || err != nil {
		t.Errorf("RangeOfHTTP(none) = %v, %v, %v; want legacy, not stated", got, stated, err)
	}
}

// TestMaxOverride: a test build's override raises MaxProtocol, and a batch
// in the newer version converts down to what a legacy peer decodes.
func TestMaxOverride(t *testing.T) {
	if MaxProtocol() != Protocol || Local() != (Range{MinProtocol, Protocol}) {
		t.Fatalf("MaxProtocol() = %d without an override, want %d", MaxProtocol(), Protocol)
	}
	for _, bad := range []string{"x", "1", "2"} {
		maxOverride = bad
		if MaxProtocol() != Protocol {
			t.Errorf("MaxProtocol() with override %q = %d, want %d", bad, MaxProtocol(), Protocol)
		}
	}
	maxOverride = "3"
	defer func() { maxOverride = "" }()
	if MaxProtocol() != 3 {
		t.Fatalf("MaxProtocol() with override 3 = %d", MaxProtocol())
	}
	up, err := NewBatch(42, valid()).As(3)
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := Encode(up)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `"protocol":3`) {
		t.Fatalf("Encode(As(3)) = %s, want protocol 3", body)
	}
	got, err := Decode(body, "")
	if err != nil {
		t.Fatal(err)
	}
	down, err := got.As(Legacy().Max)
	if err != nil {
		t.Fatal(err)
	}
	if down.Protocol != 2 || down.Changes[0].Protocol != 2 {
		t.Errorf("As(2) = batch %d, change %d; want 2, 2", down.Protocol, down.Changes[0].Protocol)
	}
	if _, err := got.As(4); !errors.Is(err, ErrProtocol) {
		t.Errorf("As(4) in a build speaking 2-3 = %v, want ErrProtocol", err)
	}
}

// TestLegacyDecodesDowngraded: what a sender converts down to the legacy
// version decodes under the strict rules of a release before ranges
// (protocol exactly 2, no unknown field).
func TestLegacyDecodesDowngraded(t *testing.T) {
	e := valid()
	e.SavedBy, e.SavedByName = 7, "kim"
	b, err := NewBatch(42, e).As(Legacy().Max)
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := strictDecode(body); err != nil {
		t.Fatalf("a legacy peer refuses %s: %v", body, err)
	}
}

// TestTolerantDecode: an optional field this build does not know is
// ignored; a required one missing is still refused.
func TestTolerantDecode(t *testing.T) {
	body, _, _ := Encode(NewBatch(42, valid()))
	added := strings.Replace(strings.Replace(string(body), `{`, `{"later":1,`, 1), `"kind":`, `"colour":"red","kind":`, 1)
	b, err := Decode([]byte(added), "")
	if err != nil {
		t.Fatalf("Decode(with unknown optional fields) = %v", err)
	}
	if b.Changes[0].RecordID != 2002 {
		t.Errorf("decoded record %v, want 2002", b.Changes[0].RecordID)
	}
	for _, drop := range []string{`"clinic":"42",`, `"change_id":"1001",`, `"type":"change",`} {
		cut := strings.Replace(string(body), drop, ``, 1)
		if cut == string(body) {
			t.Fatalf("%s not in %s", drop, body)
		}
		if _, err := Decode([]byte(cut), ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("Decode(without %s) = %v, want ErrInvalid", drop, err)
		}
	}
}

// strictDecode is how a release before ranges (edfbac7) decoded a body:
// no unknown field, protocol exactly 2. Its Envelope is this one as long as
// no field was added since; a field added later is one a conversion to the
// legacy version must drop.
func strictDecode(body []byte) error {
	var b Batch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return err
	}
	if b.Protocol != LegacyProtocol {
		return fmt.Errorf("batch protocol %d", b.Protocol)
	}
	for _, e := range b.Changes {
		if e.Protocol != LegacyProtocol {
			return fmt.Errorf("change protocol %d", e.Protocol)
		}
	}
	return nil
}
