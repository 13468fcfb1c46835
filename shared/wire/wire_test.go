package wire

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
)

func valid() Envelope {
	return Envelope{
		Protocol:    Protocol,
		Type:        TypeChange,
		Clinic:      42,
		Origin:      OriginLocal,
		ChangeID:    1001,
		Kind:        KindPatient,
		RecordID:    2002,
		BaseVersion: version.V{},
		NewVersion:  version.First,
		At:          time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
		Payload:     json.RawMessage(`{"name":"Kim"}`),
	}
}

func TestRoundTrip(t *testing.T) {
	for _, size := range []int{10, CompressAbove * 3} {
		e := valid()
		e.Payload = json.RawMessage(`{"note":"` + strings.Repeat("a", size) + `"}`)
		body, enc, err := Encode(NewBatch(e.Clinic, e))
		if err != nil {
			t.Fatal(err)
		}
		wantEnc := ""
		if size > CompressAbove {
			wantEnc = "gzip"
			if len(body) >= size {
				t.Errorf("gzip body %d bytes, not smaller than payload %d", len(body), size)
			}
		}
		if enc != wantEnc {
			t.Errorf("Encode(%d-byte payload) encoding = %q, want %q", size, enc, wantEnc)
		}
		b, err := Decode(body, enc)
		if err != nil {
			t.Fatal(err)
		}
		got := b.Changes[0]
		if len(b.Changes) != 1 || b.Clinic != e.Clinic || got.ChangeID != e.ChangeID || string(got.Payload) != string(e.Payload) || !got.At.Equal(e.At) {
			t.Fatalf("Decode(Encode(e)) = %+v, want %+v", got, e)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Envelope)
		want   error
	}{
		{"ok", func(*Envelope) {}, nil},
		{"future protocol", func(e *Envelope) { e.Protocol = Protocol + 1 }, ErrProtocol},
		{"saved by a person", func(e *Envelope) { e.SavedBy, e.SavedByName = 77, "dr.kim" }, nil},
		{"a name without a person", func(e *Envelope) { e.SavedByName = "dr.kim" }, ErrInvalid},
		{"negative person", func(e *Envelope) { e.SavedBy = -1 }, ErrInvalid},
		{"no clinic", func(e *Envelope) { e.Clinic = 0 }, ErrInvalid},
		{"bad type", func(e *Envelope) { e.Type = "x" }, ErrInvalid},
		{"bad origin", func(e *Envelope) { e.Origin = "mars" }, ErrInvalid},
		{"no change id", func(e *Envelope) { e.ChangeID = 0 }, ErrInvalid},
		{"unknown kind", func(e *Envelope) { e.Kind = "spaceship" }, ErrInvalid},
		{"no record", func(e *Envelope) { e.RecordID = 0 }, ErrInvalid},
		{"version not after base", func(e *Envelope) { e.BaseVersion = version.V{A: 2} }, ErrInvalid},
		{"up change from cloud", func(e *Envelope) { e.Origin = OriginCloud }, ErrInvalid},
		{"applied without seq", func(e *Envelope) { e.Type = TypeApplied }, ErrInvalid},
		{"applied with seq", func(e *Envelope) { e.Type = TypeApplied; e.CloudSeq = 1 }, nil},
		{"no payload", func(e *Envelope) { e.Payload = nil }, ErrInvalid},
		{"tombstone without payload", func(e *Envelope) { e.Payload = nil; e.Deleted = true }, nil},
		{"payload not json", func(e *Envelope) { e.Payload = json.RawMessage(`{`) }, ErrInvalid},
		{"up change with a resolution", func(e *Envelope) { e.Conflict = ResolvedLocalWins }, ErrInvalid},
		{"unknown resolution", func(e *Envelope) { e.Type, e.CloudSeq, e.Conflict = TypeApplied, 1, "coin-toss" }, ErrInvalid},
		{"applied keep-both copy", func(e *Envelope) { e.Type, e.CloudSeq, e.Conflict, e.ConflictOf = TypeApplied, 1, ResolvedKeepBoth, 7 }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid()
			tt.mutate(&e)
			err := e.Validate()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Validate() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBatchValidate(t *testing.T) {
	other := valid()
	other.Clinic = 43
	many := make([]Envelope, MaxBatch+1)
	for i := range many {
		many[i] = valid()
	}
	tests := []struct {
		name string
		b    Batch
		want error
	}{
		{"ok", NewBatch(42, valid(), valid()), nil},
		{"empty", NewBatch(42), ErrInvalid},
		{"no clinic", NewBatch(0, valid()), ErrInvalid},
		{"foreign change", NewBatch(42, valid(), other), ErrInvalid},
		{"too many", NewBatch(42, many...), ErrInvalid},
		{"old protocol", Batch{Protocol: 1, Clinic: 42, Changes: []Envelope{valid()}}, ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.b.Validate()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Validate() = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestEncodeAllSplits: a batch too large for one message is split into
// several, in order, each within MaxBody.
func TestEncodeAllSplits(t *testing.T) {
	var es []Envelope
	for i := range 40 {
		e := valid()
		e.ChangeID = ids.ID(i + 1)
		e.Payload = json.RawMessage(`{"note":"` + strings.Repeat(string(rune('a'+i%26)), 200<<10) + `"}`)
		es = append(es, e)
	}
	msgs, err := EncodeAll(NewBatch(42, es...))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 2 {
		t.Fatalf("EncodeAll made %d message(s) of an 8 MB batch, want several", len(msgs))
	}
	var next ids.ID = 1
	for _, m := range msgs {
		b, err := Decode(m.Body, m.ContentEncoding)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Changes) != m.Changes {
			t.Fatalf("message claims %d changes, holds %d", m.Changes, len(b.Changes))
		}
		for _, e := range b.Changes {
			if e.ChangeID != next {
				t.Fatalf("change %s out of order, want %s", e.ChangeID, next)
			}
			next++
		}
	}
	if next != 41 {
		t.Fatalf("%d changes came out, want 40", next-1)
	}
}

// TestEncodeRawAllMatchesEncodeAll: changes stored as JSON make the very
// bodies their decoded batch makes, split the same way when too large.
func TestEncodeRawAllMatchesEncodeAll(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n, size int
	}{{"one small", 1, 10}, {"compressed", 20, CompressAbove}, {"split", 40, 200 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			var es []Envelope
			var raw []json.RawMessage
			for i := range tc.n {
				e := valid()
				e.ChangeID = ids.ID(i + 1)
				e.Payload = json.RawMessage(`{"note":"<` + strings.Repeat(string(rune('a'+i%26)), tc.size) + `>"}`)
				es = append(es, e)
				b, err := json.Marshal(e)
				if err != nil {
					t.Fatal(err)
				}
				raw = append(raw, b)
			}
			want, err := EncodeAll(NewBatch(42, es...))
			if err != nil {
				t.Fatal(err)
			}
			got, err := EncodeRawAll(Protocol, 42, raw)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("EncodeRawAll made %d messages, EncodeAll %d", len(got), len(want))
			}
			for i := range got {
				g, err := Decode(got[i].Body, got[i].ContentEncoding)
				if err != nil {
					t.Fatal(err)
				}
				w, _ := Decode(want[i].Body, want[i].ContentEncoding)
				gb, _ := json.Marshal(g)
				wb, _ := json.Marshal(w)
				if string(gb) != string(wb) || got[i].Changes != want[i].Changes || got[i].ContentEncoding != want[i].ContentEncoding {
					t.Fatalf("message %d differs: %d changes %q, want %d %q", i, got[i].Changes, got[i].ContentEncoding, want[i].Changes, want[i].ContentEncoding)
				}
			}
		})
	}
	if _, err := EncodeRawAll(Protocol, 42, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("EncodeRawAll(no changes) = %v, want ErrInvalid", err)
	}
	if _, err := EncodeRawAll(99, 42, []json.RawMessage{[]byte(`{}`)}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("EncodeRawAll(protocol 99) = %v, want ErrProtocol", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	body, _, _ := Encode(NewBatch(42, valid()))
	tests := []struct {
		name string
		body string
		enc  string
	}{
		{"not json", "hello", ""},
		{"protocol too new", strings.Replace(string(body), `"protocol":2`, `"protocol":99`, 1), ""},
		{"missing required field", strings.Replace(string(body), `"record_id":"2002"`, `"record_idx":"2002"`, 1), ""},
		{"trailing", string(body) + "{}", ""},
		{"bad gzip", "nope", "gzip"},
		{"unknown encoding", string(body), "br"},
		{"too large", `{"payload":"` + strings.Repeat("x", MaxBody) + `"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode([]byte(tt.body), tt.enc); err == nil {
				t.Fatalf("Decode accepted %s", tt.name)
			}
		})
	}
}

func TestNames(t *testing.T) {
	c := ids.ID(77)
	for _, q := range []string{UpQueue(c), DownQueue(c)} {
		got, ok := ClinicOfQueue(q)
		if !ok || got != c {
			t.Errorf("ClinicOfQueue(%q) = %v, %v; want %v", q, got, ok, c)
		}
	}
	if _, ok := ClinicOfQueue("scsync.up.x"); ok {
		t.Error("ClinicOfQueue accepted a non-numeric clinic")
	}
}

func FuzzDecode(f *testing.F) {
	body, _, _ := Encode(NewBatch(42, valid()))
	f.Add(body, "")
	f.Add([]byte(`{"protocol":2}`), "")
	f.Add([]byte{0x1f, 0x8b}, "gzip")
	// A newer peer's optional additions, at the batch and envelope level.
	f.Add([]byte(strings.Replace(strings.Replace(string(body), `{`, `{"added_later":{"x":[1,2]},`, 1), `"kind":`, `"note_v9":"x","kind":`, 1)), "")
	f.Add([]byte(strings.Replace(string(body), `"protocol":2`, `"protocol":3`, 1)), "")
	f.Add([]byte(strings.Replace(string(body), `"change_id":"1001",`, ``, 1)), "")
	f.Fuzz(func(t *testing.T, b []byte, enc string) {
		e, err := Decode(b, enc)
		if err != nil {
			return
		}
		// Whatever decodes must be valid and survive a round trip.
		if verr := e.Validate(); verr != nil {
			t.Fatalf("Decode returned an invalid envelope: %v", verr)
		}
		b2, enc2, err := Encode(e)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := Decode(b2, enc2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
