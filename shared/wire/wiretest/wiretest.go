// Package wiretest is for the tests of the hand encoders of JSON
// (wire.AppendJSON and the appenders beside it, the clinic's API answers,
// the viewers' events): values that json.Marshal writes
// in each of its ways, and the comparison of an encoder's bytes with
// json.Marshal's.
package wiretest

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// ErrRefused is what an encoder adapted for SameAsMarshal returns where
// it reports that json.Marshal fails without giving json.Marshal's error.
var ErrRefused = errors.New("wiretest: refused")

// SameAsMarshal fails t unless appendJSON appends to b exactly the bytes
// json.Marshal(v) returns, or fails where json.Marshal fails, with its
// error (or ErrRefused) and b as it was.
func SameAsMarshal(t testing.TB, v any, appendJSON func(b []byte) ([]byte, error)) {
	t.Helper()
	want, werr := json.Marshal(v)
	prefix := []byte("prefix,")
	got, gerr := appendJSON(bytes.Clone(prefix))
	switch {
	case (werr == nil) != (gerr == nil) || gerr != nil && !errors.Is(gerr, ErrRefused) && gerr.Error() != werr.Error():
		t.Fatalf("appending %#v: error %v, json.Marshal's %v", v, gerr, werr)
	case werr != nil && !bytes.Equal(got, prefix):
		t.Fatalf("appending %#v failed and left %q, want %q", v, got, prefix)
	case werr == nil && !bytes.Equal(got, append(prefix, want...)):
		t.Fatalf("appending %#v = %s, json.Marshal's %s", v, got[len(prefix):], want)
	}
}

// JSONFields lists the fields of the struct types as json.Marshal sees
// them, "Name tag" (the json tag), fields tagged "-" left out: a test of a
// hand encoder compares it with the fields the encoder writes, so that it
// fails when a type gains, loses or renames one.
func JSONFields(types ...reflect.Type) []string {
	var out []string
	for _, typ := range types {
		for f := range typ.Fields() {
			if tag := f.Tag.Get("json"); tag != "-" {
				out = append(out, f.Name+" "+tag)
			}
		}
	}
	return out
}

// AddSeeds adds a seed of each of Strings to f, whose target takes
// (t, a, b string, x, y int64, flags uint16, at int64, offset int, mono
// bool): at, offset and mono for Time, flags for the optional fields.
func AddSeeds(f *testing.F) {
	for i, s := range Strings {
		f.Add(s, Strings[len(Strings)-1-i], int64(i)<<40, int64(i-3), uint16(i*2731), int64(1764800000123456789)*int64(i%3-1), i*3600-43200, i%2 == 0)
	}
}

// Strings are strings json.Marshal writes as they are (empty, ASCII,
// non-ASCII, long) and strings it rewrites: quotes and backslashes,
// control characters, the HTML characters, U+2028 and U+2029, invalid
// UTF-8 (cut, overlong, a surrogate, a lone byte).
var Strings = []string{
	"", "plain", "José Müller", "李", "emoji 😀", `quote"d`, `back\slash`, "<b>&amp;</b>",
	"line\u2028sep", "para\u2029sep", "\u2027\u202a", "nul\x00", "ctl\x01\x1f", "tab\t", "nl\n", "cr\r",
	"bs\b", "ff\f", "del\x7f", "bad\xff", "cut\xe2\x80", "overlong\xc0\xaf", "surrogate\xed\xa0\x80",
	strings.Repeat("x", 70),
}

// Times are times json.Marshal writes in each form (no fraction, a
// fraction cut short, nanoseconds; UTC, zones east and west, an offset of
// seconds; with a monotonic reading, in the local zone) and times it
// refuses (a year beyond 9999 or before 0, an offset of 24 hours), the
// zero time first.
func Times() []time.Time {
	return []time.Time{
		{}, time.Date(2026, 12, 7, 3, 4, 5, 0, time.UTC), time.Date(2026, 12, 7, 3, 4, 5, 123456789, time.UTC),
		time.Date(2026, 12, 7, 3, 4, 5, 120000000, time.UTC), time.Date(2026, 12, 7, 3, 4, 5, 1000, time.FixedZone("", 5*3600+1800)),
		time.Date(2026, 12, 7, 3, 4, 5, 0, time.FixedZone("", -8*3600)), time.Date(2026, 12, 7, 3, 4, 5, 0, time.FixedZone("odd", 61)),
		time.Date(2026, 12, 7, 3, 4, 5, 0, time.FixedZone("", 24*3600)), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Now(), time.Now().Local(), time.Now().UTC().Add(time.Hour),
	}
}

// Time is a fuzzer's time: at nanoseconds after 1970 in the zone offset
// seconds east of UTC, years later (beyond 9999 json.Marshal refuses
// it); with mono, as far from now, with now's monotonic reading.
func Time(at int64, offset, years int, mono bool) time.Time {
	t := time.Unix(0, at)
	if mono {
		t = time.Now().Add(time.Duration(at))
	}
	if years != 0 {
		t = t.AddDate(years, 0, 0) // drops the monotonic reading
	}
	return t.In(time.FixedZone("", offset))
}
