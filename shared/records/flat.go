package records

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/scsync/scsync/shared/wire"
)

// DecodeFlat reads the JSON object at the start of b as k's content,
// without encoding/json, when k's content is a struct of plain string
// fields (a patient's) and the object is in the plain form a client's
// encoder writes: each key exactly a field's JSON name, once, and each
// value a string without escapes, control characters or invalid UTF-8
// (blanks between the tokens are allowed). It returns the content, valid,
// and the object's length in b. ok is false for anything else (another
// kind, a key spelt otherwise, a key twice, an escape, a number, null, an
// invalid content, malformed JSON), which DecodeNext or Decode then read
// as before, with their errors: for every object DecodeFlat takes, they
// give the same content (encoding/json matches a key exactly before it
// tries other cases, and a string without escapes is its bytes).
func DecodeFlat(k wire.Kind, b []byte) (c Content, n int, ok bool) {
	fk := flatKinds[k]
	if fk == nil {
		return nil, 0, false
	}
	v := reflect.New(fk.typ).Elem()
	var seen uint64
	i := wire.SkipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, 0, false
	}
	i = wire.SkipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return finishFlat(v, i+1)
	}
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return nil, 0, false
		}
		f, known := fk.fields[key]
		if !known || seen&(1<<f) != 0 {
			return nil, 0, false
		}
		seen |= 1 << f
		i = wire.SkipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return nil, 0, false
		}
		val, j, ok := plainString(b, wire.SkipSpace(b, i+1))
		if !ok {
			return nil, 0, false
		}
		v.Field(f).SetString(val)
		i = wire.SkipSpace(b, j)
		if i >= len(b) {
			return nil, 0, false
		}
		switch b[i] {
		case '}':
			return finishFlat(v, i+1)
		case ',':
			i = wire.SkipSpace(b, i+1)
		default:
			return nil, 0, false
		}
	}
}

func finishFlat(v reflect.Value, n int) (Content, int, bool) {
	c := v.Interface().(Content)
	if c.Validate() != nil {
		return nil, 0, false
	}
	return c, n, true
}

// plainString reads the JSON string at b[i:] when it has no escape, no
// control character and no invalid UTF-8: its text and the index after it.
func plainString(b []byte, i int) (s string, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	start, ascii := i+1, true
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:j]) {
				return "", 0, false // encoding/json would replace the bad bytes
			}
			return string(b[start:j]), j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", 0, false
}

// flatKind is a content struct of plain string fields: its type and each
// field's index by its JSON name.
type flatKind struct {
	typ    reflect.Type
	fields map[string]int
}

// flatKinds are the kinds DecodeFlat reads (the others have fields of
// other types: numbers, booleans, ids, times, JSON).
var flatKinds = func() map[wire.Kind]*flatKind {
	out := map[wire.Kind]*flatKind{}
	for _, c := range []Content{Patient{}, Doctor{}, User{}, ReportTemplate{}, Setting{}, Study{}, Image{},
		Capture{}, ProjectFile{}, Report{}} {
		if fk := flatOf(reflect.TypeOf(c)); fk != nil {
			out[c.Kind()] = fk
		}
	}
	return out
}()

// flatOf is t as a flatKind, or nil when a field is not a plain string
// with a plain JSON name, when t decodes itself (UnmarshalJSON or
// UnmarshalText), or when t has more fields than DecodeFlat tracks.
func flatOf(t reflect.Type) *flatKind {
	if t.Kind() != reflect.Struct || t.NumField() > 64 || codes(t) || codes(reflect.PointerTo(t)) {
		return nil
	}
	fk := &flatKind{typ: t, fields: map[string]int{}}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous || !f.IsExported() || f.Type != reflect.TypeFor[string]() {
			return nil
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "" || (opts != "" && opts != "omitempty") || !plainName(name) {
			return nil
		}
		fk.fields[name] = i
	}
	return fk
}

// codes: t has a JSON or text method of its own, which encoding/json would
// call instead of setting the fields.
func codes(t reflect.Type) bool {
	for _, i := range []reflect.Type{reflect.TypeFor[json.Unmarshaler](), reflect.TypeFor[encoding.TextUnmarshaler]()} {
		if t.Implements(i) {
			return true
		}
	}
	return false
}

// plainName: a JSON name of lower-case ASCII letters, digits and
// underscores, which encoding/json takes as it is.
func plainName(s string) bool {
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
