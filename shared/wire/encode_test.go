package wire

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire/wiretest"
)

// sameAsMarshal fails t unless e.AppendJSON appends exactly what
// json.Marshal(e) returns, or fails with its error and leaves b as it was.
func sameAsMarshal(t *testing.T, e Envelope) {
	t.Helper()
	wiretest.SameAsMarshal(t, e, e.AppendJSON)
}

// optional sets each of the envelope's optional (omitempty) fields when its
// bit is set in mask.
func optional(e Envelope, mask int) Envelope {
	set := func(bit int) bool { return mask&(1<<bit) != 0 }
	e.Deleted = set(0)
	if set(1) {
		e.CloudSeq = 987654321
	}
	if !set(2) {
		e.Payload = nil
	}
	if set(3) {
		e.Conflict = ResolvedKeepBoth
	}
	if set(4) {
		e.ConflictOf = 7_000_000_000_001
	}
	if set(5) {
		e.Fence = 12
	}
	e.Unfenced = set(6)
	e.Unsync = set(7)
	if set(8) {
		e.SavedBy = 31
	}
	if set(9) {
		e.SavedByName = "kim"
	}
	return e
}

const optionalFields = 10

func TestAppendJSONMatchesMarshal(t *testing.T) {
	t.Parallel()
	t.Run("every set of optional fields", func(t *testing.T) {
		t.Parallel()
		for mask := range 1 << optionalFields {
			sameAsMarshal(t, optional(valid(), mask))
		}
	})
	t.Run("the zero envelope", func(t *testing.T) {
		t.Parallel()
		sameAsMarshal(t, Envelope{})
		sameAsMarshal(t, Envelope{Payload: json.RawMessage{}})
	})
	t.Run("strings", func(t *testing.T) {
		t.Parallel()
		for _, s := range wiretest.Strings {
			for _, f := range []func(*Envelope){
				func(e *Envelope) { e.Type = Type(s) },
				func(e *Envelope) { e.Origin = Origin(s) },
				func(e *Envelope) { e.Kind = Kind(s) },
				func(e *Envelope) { e.Conflict = s },
				func(e *Envelope) { e.SavedByName = s },
			} {
				e := optional(valid(), 1<<optionalFields-1)
				f(&e)
				sameAsMarshal(t, e)
			}
		}
	})
	t.Run("payloads", func(t *testing.T) {
		t.Parallel()
		for _, p := range []string{
			`{"name":"Kim"}`, `{"name": "Kim"}`, ` {"a":1}`, `{"a":1} `, "{\"a\":\n1}", "{\"a\":\t1,\r\"b\":2}",
			`{"a":"x y"}`, `{"a":"<b>"}`, `{"a":"&"}`, `{"a":">"}`, `{"a":"\u003c"}`, "{\"a\":\"\u2028\"}",
			"{\"a\":\"\u2029\"}", "{\"a\":\"\u2027\"}", `{"a":"\"  \""}`, `{"a":"\\"," b":[1, 2]}`, `{"a":"\\\" x"}`,
			`"str"`, `"a b"`, `123`, `-1.5e3`, `null`, `true`, `[]`, `[1, 2]`, `{}`, `{"a":{"b":[{"c":null}]}}`,
			`{"a":`, `{"a":1}}`, `{"a":1`, `nul`, `{'a':1}`, "\xff", `{"a":"` + "\xff" + `"}`, `"unterminated`,
			`{"a":1}{"b":2}`, " ", "\xe2\x80", `{"name":"` + strings.Repeat("Kim ", 300) + `"}`,
		} {
			e := valid()
			e.Payload = json.RawMessage(p)
			sameAsMarshal(t, e)
			sameAsMarshal(t, optional(e, 1<<optionalFields-1))
		}
	})
	t.Run("numbers", func(t *testing.T) {
		t.Parallel()
		for _, n := range []int64{0, 1, -1, 1 << 53, 1<<63 - 1, -1 << 63} {
			e := optional(valid(), 1<<optionalFields-1)
			e.Protocol, e.CloudSeq, e.Fence = int(n), n, n
			e.Clinic, e.ChangeID, e.RecordID, e.ConflictOf, e.SavedBy = ids.ID(n), ids.ID(n), ids.ID(n), ids.ID(n), ids.ID(n)
			sameAsMarshal(t, e)
		}
		for _, v := range []version.V{{}, version.First, {A: 3, B: 17}, {A: 1<<32 - 1, B: 1<<32 - 1}} {
			e := valid()
			e.BaseVersion, e.NewVersion = v, v
			sameAsMarshal(t, e)
		}
	})
	t.Run("times", func(t *testing.T) {
		t.Parallel()
		for _, at := range wiretest.Times() {
			e := valid()
			e.At = at
			sameAsMarshal(t, e)
		}
	})
}

// TestAppendJSONKnowsEveryField fails when Envelope gains, loses or renames
// a field: appendFast must then write it too.
func TestAppendJSONKnowsEveryField(t *testing.T) {
	t.Parallel()
	want := []string{
		"Protocol protocol", "Type type", "Clinic clinic", "Origin origin", "ChangeID change_id", "Kind kind",
		"RecordID record_id", "BaseVersion base_version", "NewVersion new_version", "Deleted deleted,omitempty",
		"CloudSeq cloud_seq,omitempty", "At at", "Payload payload,omitempty", "Conflict conflict,omitempty",
		"ConflictOf conflict_of,omitempty", "Fence fence,omitempty", "Unfenced unfenced,omitempty",
		"Unsync unsync,omitempty", "SavedBy saved_by,omitempty", "SavedByName saved_by_name,omitempty",
	}
	if got := wiretest.JSONFields(reflect.TypeFor[Envelope]()); !slices.Equal(got, want) {
		t.Fatalf("Envelope's fields = %q, the encoder writes %q: update appendFast and this list", got, want)
	}
}

func TestAppendValid(t *testing.T) {
	t.Parallel()
	e := valid()
	got, err := e.AppendValid(nil)
	want, _ := json.Marshal(e)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("AppendValid(valid) = %s, %v, want %s", got, err, want)
	}
	// What the servers send takes the fast path, not json.Marshal.
	for _, p := range []json.RawMessage{e.Payload, benchPayload()} {
		e := optional(valid(), 1<<optionalFields-1)
		e.Payload, e.SavedByName = p, "José"
		if _, ok := e.appendFast(nil, true); !ok {
			t.Fatalf("appendFast(%s) fell back to json.Marshal", p)
		}
	}
	e.Payload = json.RawMessage(`{"a":`)
	if got, err := e.AppendValid([]byte("x")); err == nil || err.Error() != e.Validate().Error() || string(got) != "x" {
		t.Fatalf("AppendValid(bad payload) = %q, %v, want x, %v", got, err, e.Validate())
	}
}

func TestEncodeMatchesMarshal(t *testing.T) {
	t.Parallel()
	for _, b := range []Batch{
		{}, {Protocol: 2, Clinic: 42}, {Protocol: 2, Clinic: 42, Changes: []Envelope{}},
		NewBatch(42, valid()), NewBatch(42, valid(), optional(valid(), 1<<optionalFields-1), optional(valid(), 0b1010101010)),
	} {
		want, werr := json.Marshal(b)
		got, gerr := appendBatch(nil, &b, false)
		if fmt.Sprint(werr) != fmt.Sprint(gerr) || !bytes.Equal(got, want) {
			t.Fatalf("appendBatch(%#v) = %s, %v, json.Marshal's %s, %v", b, got, gerr, want, werr)
		}
	}
	// Encode's body, uncompressed and compressed, is json.Marshal's.
	for _, n := range []int{1, 3, 60, MaxBatch} {
		b := NewBatch(42)
		for i := range n {
			e := optional(valid(), i%(1<<optionalFields))
			e.Deleted, e.Unsync = false, false
			e.Payload = json.RawMessage(`{"name":"Kim & Lee <x>","n":` + fmt.Sprint(i) + `}`)
			if i%2 == 0 {
				e.Payload = json.RawMessage(`{"name": "Kim", "n": ` + fmt.Sprint(i) + `}`)
			}
			if e.Fence > 0 {
				e.Unfenced = false
			}
			if e.Type == TypeChange {
				e.Conflict, e.ConflictOf = "", 0
			}
			b.Changes = append(b.Changes, e)
		}
		body, ce, err := Encode(b)
		if err != nil {
			t.Fatalf("Encode(%d changes): %v", n, err)
		}
		want, _ := json.Marshal(b)
		if got := decompress(t, body, ce); !bytes.Equal(got, want) {
			t.Fatalf("Encode(%d changes) = %s, json.Marshal's %s", n, got, want)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("change", "local", "patient", `{"name":"Kim"}`, "", "", int64(1001), int64(0), uint16(0), int64(1764800000123456789), 0)
	f.Add("applied", "cloud", "study", `{"a": "<b>"}`, "keep-both", "José", int64(-1), int64(5), uint16(0xffff), int64(0), 3600)
	f.Add("x\"", "\u2028", "\xff", "{\"a\":\"\u2028\"}", "\x01", "a&b", int64(1<<62), int64(-3), uint16(0x155), int64(-62135596800000000), -86400)
	f.Fuzz(func(t *testing.T, typ, origin, kind, payload, conflict, name string, id, n int64, flags uint16, at int64, offset int) {
		flag := func(bit int) bool { return flags&(1<<bit) != 0 }
		e := Envelope{
			Protocol: int(n), Type: Type(typ), Clinic: ids.ID(id), Origin: Origin(origin), ChangeID: ids.ID(id + 1),
			Kind: Kind(kind), RecordID: ids.ID(n), BaseVersion: version.V{A: uint32(id), B: uint32(n)},
			NewVersion: version.V{A: uint32(n), B: uint32(flags)}, Deleted: flag(0), At: wiretest.Time(at, offset, 0, flag(9)),
			Conflict: conflict, Fence: n * int64(flags&2), Unfenced: flag(2), Unsync: flag(3), SavedByName: name,
		}
		if flag(4) {
			e.CloudSeq = id
		}
		if flag(5) || payload != "" {
			e.Payload = json.RawMessage(payload)
		}
		if flag(6) {
			e.ConflictOf = ids.ID(n)
		}
		if flag(7) {
			e.SavedBy = ids.ID(id)
		}
		if flag(8) {
			e.At = wiretest.Time(at, offset, int(n%20000), false)
		}
		sameAsMarshal(t, e)
	})
}

// sameAppended fails t unless the appender's bytes for v are json.Marshal's
// (ok false where json.Marshal fails, with b as it was).
func sameAppended[T any](t *testing.T, appender func([]byte, T) ([]byte, bool), v T) {
	t.Helper()
	wiretest.SameAsMarshal(t, v, func(b []byte) ([]byte, error) {
		out, ok := appender(b, v)
		if !ok {
			return out, wiretest.ErrRefused
		}
		return out, nil
	})
}

// always is an appender that cannot fail, as sameAppended takes it.
func always[T any](appender func([]byte, T) []byte) func([]byte, T) ([]byte, bool) {
	return func(b []byte, v T) ([]byte, bool) { return appender(b, v), true }
}

// omitEmpty is a struct with a string field tagged omitempty, and
// appendOmitEmpty its JSON by AppendOmitEmpty.
type omitEmpty struct {
	A int    `json:"a"`
	S string `json:"s,omitempty"`
}

func appendOmitEmpty(b []byte, v omitEmpty) []byte {
	b = append(b, `{"a":`...)
	b = strconv.AppendInt(b, int64(v.A), 10)
	return append(AppendOmitEmpty(b, `,"s":`, v.S), '}')
}

func TestAppendersMatchMarshal(t *testing.T) {
	t.Parallel()
	for _, s := range wiretest.Strings {
		sameAppended(t, always(AppendString), s)
		sameAppended(t, always(appendOmitEmpty), omitEmpty{S: s})
	}
	for _, at := range wiretest.Times() {
		sameAppended(t, AppendTime, at)
	}
	for _, n := range []int64{0, 1, -1, 1 << 53, 1<<63 - 1, -1 << 63} {
		sameAppended(t, always(AppendID), ids.ID(n))
	}
	for _, v := range []version.V{{}, version.First, {A: 3, B: 17}, {A: 1<<32 - 1, B: 1<<32 - 1}} {
		sameAppended(t, always(AppendVersion), v)
	}
}

func FuzzAppenders(f *testing.F) {
	wiretest.AddSeeds(f)
	f.Fuzz(func(t *testing.T, s, _ string, x, y int64, flags uint16, at int64, offset int, mono bool) {
		sameAppended(t, always(AppendString), s)
		sameAppended(t, always(appendOmitEmpty), omitEmpty{A: offset, S: s})
		sameAppended(t, AppendTime, wiretest.Time(at, offset, int(y%20000), mono))
		sameAppended(t, always(AppendID), ids.ID(x))
		sameAppended(t, always(AppendVersion), version.V{A: uint32(x), B: uint32(y) ^ uint32(flags)})
	})
}

// BenchmarkEnvelopeJSON is the clinic's outbox row of a 1 KB patient: its
// envelope validated and encoded, as a string, before (json.Marshal) and
// now (AppendValid into a reused buffer, as the store's outboxOf).
func BenchmarkEnvelopeJSON(b *testing.B) {
	e := valid()
	e.Payload = benchPayload()
	var row string
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := e.Validate(); err != nil {
				b.Fatal(err)
			}
			j, err := json.Marshal(e)
			if err != nil {
				b.Fatal(err)
			}
			row = string(j)
		}
	})
	b.Run("AppendValid", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 4<<10)
		for b.Loop() {
			j, err := e.AppendValid(buf[:0])
			if err != nil {
				b.Fatal(err)
			}
			row = string(j)
		}
	})
	_ = row
}

// BenchmarkEncode is a down message of the replication benchmark's size
// (about 60 acceptances of 1 KB records, gzipped), encoded as Encode did
// before (json.Marshal of the batch) and as it does now.
func BenchmarkEncode(b *testing.B) {
	batch := NewBatch(42)
	for i := range 60 {
		e := valid()
		e.Type, e.Origin, e.CloudSeq, e.ChangeID, e.Payload = TypeApplied, OriginLocal, int64(i+1), ids.ID(1000+i), benchPayload()
		batch.Changes = append(batch.Changes, e)
	}
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := batch.Validate(); err != nil {
				b.Fatal(err)
			}
			body, err := json.Marshal(batch)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := finish(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := Encode(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchPayload is a patient of about 1 KB as json.Marshal writes it.
func benchPayload() json.RawMessage {
	p, _ := json.Marshal(map[string]any{
		"first_name": "Patient", "last_name": "Number 1234", "chart_number": "C-000001234", "birth_date": "1980-01-02",
		"sex": "F", "phone": "+1 555 0100", "email": "patient1234@example.org", "address": "12 Main Street, Springfield",
		"notes": strings.Repeat("Allergic to penicillin; follow-up in six months. ", 16),
	})
	return p
}

// decompress returns an encoded body's JSON.
func decompress(t *testing.T, body []byte, contentEncoding string) []byte {
	t.Helper()
	if contentEncoding == "" {
		return body
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("gzip.NewReader: %v", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return b
}
