package wire

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/ids"
)

// sameAsDecoder fails t unless decodeFast reads body as json.Decoder does
// (when it reads it at all), and reports whether it read it.
func sameAsDecoder(t *testing.T, body []byte) bool {
	t.Helper()
	got, ok := decodeFast(body)
	if !ok {
		return false
	}
	want, err := decodeJSON(body)
	if err != nil {
		t.Fatalf("decodeFast(%s) read a body json.Decoder refuses: %v", body, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeFast(%s) = %#v, json.Decoder's %#v", body, got, want)
	}
	return true
}

func TestDecodeFastMatchesDecoder(t *testing.T) {
	t.Parallel()
	for mask := range 1 << optionalFields {
		e := optional(valid(), mask)
		e.SavedByName = "José"
		body, _ := json.Marshal(NewBatch(42, e, optional(valid(), 1<<optionalFields-1-mask)))
		if e.Payload != nil && !sameAsDecoder(t, body) {
			t.Fatalf("decodeFast(%s) left it to json.Decoder", body)
		}
	}
	for _, body := range decodeSeeds() {
		sameAsDecoder(t, body)
	}
	// encoding/json's nesting limit counts from the body's top: a payload
	// 9,997 objects deep makes 10,000 levels, one more is refused.
	body, _ := json.Marshal(NewBatch(42, valid()))
	for _, n := range []int{9997, 9998} {
		deep := strings.Replace(string(body), `{"name":"Kim"}`, strings.Repeat(`{"a":`, n)+"1"+strings.Repeat("}", n), 1)
		_, jerr := decodeJSON([]byte(deep))
		if fast := sameAsDecoder(t, []byte(deep)); fast != (jerr == nil) || fast != (n == 9997) {
			t.Fatalf("a payload %d deep: decodeFast read it %v, json.Decoder's error %v", n, fast, jerr)
		}
	}
}

// decodeSeeds are bodies Encode writes and variants of them.
func decodeSeeds() [][]byte {
	e := optional(valid(), 1<<optionalFields-1)
	body, _ := json.Marshal(NewBatch(42, valid(), e))
	out := [][]byte{body}
	for _, r := range [][2]string{
		{`"protocol":2`, `"protocol":-0`}, {`"protocol":2`, `"protocol":02`}, {`"protocol":2`, `"protocol":2.0`},
		{`"clinic":"42"`, `"clinic":42`}, {`"clinic":"42"`, `"clinic":"042"`}, {`"clinic":"42"`, `"clinic":"-42"`},
		{`"type":"change"`, `"type":"ch\u0061nge"`}, {`"type":"change"`, `"Type":"change"`}, {`"kind":"patient"`, `"kind":"study"`},
		{`"at":"2026-11-22T10:00:00Z"`, `"at":"2026-11-22T10:00:00+01:00"`}, {`"at":"2026-11-22T10:00:00Z"`, `"at":"2026-11-22 10:00:00Z"`},
		{`"payload":{"name":"Kim"}`, `"payload":{"name": "Kim"}`}, {`"payload":{"name":"Kim"}`, `"payload":[1]`},
		{`"payload":{"name":"Kim"}`, `"payload":{"name":"Kim"`}, {`"base_version":"0.0"`, `"base_version":"0.00"`},
		{`"deleted":true`, `"deleted":false`}, {`"cloud_seq":987654321`, `"cloud_seq":9876543210987654321`},
		{`}]}`, `}]} `}, {`}]}`, `}]}x`}, {`,"saved_by_name":"kim"`, `,"saved_by_name":"kim","later":1`},
	} {
		out = append(out, []byte(strings.Replace(string(body), r[0], r[1], 1)))
	}
	return out
}

func FuzzDecodeFast(f *testing.F) {
	for _, b := range decodeSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) { sameAsDecoder(t, body) })
}

// BenchmarkDecode is an up message of the replication benchmark's size
// (60 changes of 1 KB records) read as Decode did before (json.Decoder)
// and as it does now.
func BenchmarkDecode(b *testing.B) {
	batch := NewBatch(42)
	for i := range 60 {
		e := valid()
		e.ChangeID, e.Payload = ids.ID(1000+i), benchPayload()
		batch.Changes = append(batch.Changes, e)
	}
	body, err := json.Marshal(batch)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("json.Decoder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e, err := decodeJSON(body)
			if err != nil {
				b.Fatal(err)
			}
			if err := e.validate(true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(body, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}
