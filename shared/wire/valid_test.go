package wire

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidJSONMatchesJSONValid(t *testing.T) {
	t.Parallel()
	for _, s := range validJSONSeeds() {
		if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("validJSON(%q) = %v, json.Valid %v", s, got, want)
		}
	}
}

func validJSONSeeds() []string {
	deep := func(n int, open, close string) string { return strings.Repeat(open, n) + strings.Repeat(close, n) }
	return []string{
		"", " ", "{}", "[]", " {} ", "\t[\n]\r", "{", "}", "[", "]", "{]", "[}", `{"a":1}`, `{"a" : 1 , "b":[1,2 ,3]}`,
		`{"a":1,}`, `[1,]`, `[,1]`, `{,}`, `{"a"}`, `{"a":}`, `{a:1}`, `{"a":1}}`, `{"a":1}{}`, `[1] [2]`, `1 2`,
		`0`, `-0`, `01`, `-01`, `1.`, `.5`, `1.5`, `-1.5e10`, `1e`, `1e+`, `1E-7`, `1e+07`, `+1`, `-`, `--1`, `0x1`, `1.2.3`,
		`true`, `false`, `null`, `tru`, `nul`, `truee`, `True`, `NULL`, `[true,false,null]`, `nan`, `Infinity`,
		`""`, `"a"`, `"a`, `"\"`, `"\\"`, `"\/"`, `"\b\f\n\r\t"`, `"\u00e9"`, `"\u00E9"`, `"\u00g9"`, `"\u00e"`, `"\u"`,
		`"\x"`, `"\'"`, "\"\x00\"", "\"\x1f\"", "\"\x7f\"", "\"\xff\xfe\"", "\"é\"", "\"\t\"", "\"\n\"", `"a"b`,
		deep(10000, "[", "]"), deep(10001, "[", "]"), strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
		strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001), deep(9999, "[", "]")[:5000],
		`{"name":"Kim","tags":["a","b"],"n":{"x":-0.5e-3,"y":null}}`,
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range validJSONSeeds() {
		if len(s) < 1000 {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if got, want := validJSON(p), json.Valid(p); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid %v", p, got, want)
		}
	})
}

func BenchmarkValidJSON(b *testing.B) {
	p := benchPayload()
	b.Run("json.Valid", func(b *testing.B) {
		for b.Loop() {
			json.Valid(p)
		}
	})
	b.Run("validJSON", func(b *testing.B) {
		for b.Loop() {
			validJSON(p)
		}
	})
}
