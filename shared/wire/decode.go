package wire

import (
	"strconv"
	"unicode/utf8"

	"github.com/scsync/scsync/shared/ids"
)

// decodeFast decodes a body in the form Encode writes it (json.Marshal's:
// the fields in order, no whitespace, strings without escapes, each payload
// an object) into the Batch json.Decoder would make of it, without
// reflection. It reports false for any other body, valid or not, which
// Decode then hands to json.Decoder: a peer that writes JSON otherwise (a
// newer one's extra fields, keys spelt differently, escapes, spaces) gets
// exactly the result and the error it got before. FuzzDecodeFast holds the
// two to the same batches.
func decodeFast(body []byte) (Batch, bool) {
	d := fastDecoder{p: body}
	var b Batch
	ok := d.lit(`{"protocol":`) && d.int(&b.Protocol) &&
		d.lit(`,"clinic":`) && d.id(&b.Clinic) &&
		d.lit(`,"changes":[`)
	if !ok {
		return Batch{}, false
	}
	for {
		var e Envelope
		if !d.envelope(&e) {
			return Batch{}, false
		}
		b.Changes = append(b.Changes, e)
		if d.lit(`]}`) {
			return b, d.i == len(d.p)
		}
		if !d.lit(",") {
			return Batch{}, false
		}
	}
}

// fastDecoder reads p from i.
type fastDecoder struct {
	p []byte
	i int
}

func (d *fastDecoder) envelope(e *Envelope) bool {
	ok := d.lit(`{"protocol":`) && d.int(&e.Protocol) &&
		d.lit(`,"type":`) && d.str((*string)(&e.Type)) &&
		d.lit(`,"clinic":`) && d.id(&e.Clinic) &&
		d.lit(`,"origin":`) && d.str((*string)(&e.Origin)) &&
		d.lit(`,"change_id":`) && d.id(&e.ChangeID) &&
		d.lit(`,"kind":`) && d.str((*string)(&e.Kind)) &&
		d.lit(`,"record_id":`) && d.id(&e.RecordID) &&
		d.lit(`,"base_version":`) && d.text(e.BaseVersion.UnmarshalText) &&
		d.lit(`,"new_version":`) && d.text(e.NewVersion.UnmarshalText) &&
		(!d.lit(`,"deleted":`) || d.bool(&e.Deleted)) &&
		(!d.lit(`,"cloud_seq":`) || d.int64(&e.CloudSeq)) &&
		d.lit(`,"at":`) && d.time(e) &&
		(!d.lit(`,"payload":`) || d.payload(e)) &&
		(!d.lit(`,"conflict":`) || d.str(&e.Conflict)) &&
		(!d.lit(`,"conflict_of":`) || d.id(&e.ConflictOf)) &&
		(!d.lit(`,"fence":`) || d.int64(&e.Fence)) &&
		(!d.lit(`,"unfenced":`) || d.bool(&e.Unfenced)) &&
		(!d.lit(`,"unsync":`) || d.bool(&e.Unsync)) &&
		(!d.lit(`,"saved_by":`) || d.id(&e.SavedBy)) &&
		(!d.lit(`,"saved_by_name":`) || d.str(&e.SavedByName))
	return ok && d.lit("}")
}

// lit consumes s if p continues with it.
func (d *fastDecoder) lit(s string) bool {
	if len(d.p)-d.i < len(s) || string(d.p[d.i:d.i+len(s)]) != s {
		return false
	}
	d.i += len(s)
	return true
}

// span consumes a string without escapes or control characters and
// returns its contents, which are then what json.Decoder unquotes it to
// (valid UTF-8 is kept as it is).
func (d *fastDecoder) span() ([]byte, bool) {
	if d.i >= len(d.p) || d.p[d.i] != '"' {
		return nil, false
	}
	start, ascii := d.i+1, true
	for j := start; j < len(d.p); j++ {
		switch c := d.p[j]; {
		case c == '"':
			s := d.p[start:j]
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			d.i = j + 1
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

func (d *fastDecoder) str(s *string) bool {
	b, ok := d.span()
	if !ok {
		return false
	}
	// The record types and origins without an allocation each.
	switch string(b) {
	case string(TypeChange):
		*s = string(TypeChange)
	case string(TypeApplied):
		*s = string(TypeApplied)
	case string(OriginLocal):
		*s = string(OriginLocal)
	case string(OriginCloud):
		*s = string(OriginCloud)
	default:
		if k, ok := kindNames[string(b)]; ok {
			*s = string(k)
		} else {
			*s = string(b)
		}
	}
	return true
}

// kindNames interns the kinds' names for str.
var kindNames = func() map[string]Kind {
	m := make(map[string]Kind, len(knownKinds))
	for k := range knownKinds {
		m[string(k)] = k
	}
	return m
}()

// id reads an id as json.Decoder does: ids.ID.UnmarshalJSON of the
// literal (only a quoted decimal here).
func (d *fastDecoder) id(id *ids.ID) bool {
	start := d.i
	b, ok := d.span()
	if !ok || len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return id.UnmarshalJSON(d.p[start:d.i]) == nil
}

// text reads a string into an encoding.TextUnmarshaler, as json.Decoder
// does (the unquoted string to UnmarshalText).
func (d *fastDecoder) text(unmarshal func([]byte) error) bool {
	b, ok := d.span()
	return ok && unmarshal(b) == nil
}

// time reads e.At as json.Decoder does: time.Time.UnmarshalJSON of the
// literal.
func (d *fastDecoder) time(e *Envelope) bool {
	start := d.i
	if _, ok := d.span(); !ok {
		return false
	}
	return e.At.UnmarshalJSON(d.p[start:d.i]) == nil
}

// number consumes an integer as JSON writes it: -?(0|[1-9][0-9]*).
func (d *fastDecoder) number() ([]byte, bool) {
	start := d.i
	if d.i < len(d.p) && d.p[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.p) && d.p[d.i] >= '0' && d.p[d.i] <= '9' {
		d.i++
	}
	if n := d.i - digits; n == 0 || n > 1 && d.p[digits] == '0' {
		return nil, false
	}
	// A fraction or an exponent is JSON json.Decoder refuses for an
	// integer field (with its error): not this decoder's to read.
	if d.i < len(d.p) && (d.p[d.i] == '.' || d.p[d.i] == 'e' || d.p[d.i] == 'E') {
		return nil, false
	}
	return d.p[start:d.i], true
}

func (d *fastDecoder) int64(n *int64) bool {
	b, ok := d.number()
	if !ok {
		return false
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	*n = v
	return err == nil
}

func (d *fastDecoder) int(n *int) bool {
	var v int64
	if !d.int64(&v) || int64(int(v)) != v {
		return false
	}
	*n = int(v)
	return true
}

func (d *fastDecoder) bool(v *bool) bool {
	switch {
	case d.lit("true"):
		*v = true
	case d.lit("false"):
		*v = false
	default:
		return false
	}
	return true
}

// payload reads e.Payload, an object, as json.Decoder stores a
// json.RawMessage: a copy of the value's bytes, checked to be JSON (at the
// depth it has in the body: encoding/json's nesting limit counts from the
// body's top).
func (d *fastDecoder) payload(e *Envelope) bool {
	if d.i >= len(d.p) || d.p[d.i] != '{' {
		return false
	}
	end, ok := validValue(d.p, d.i, 3)
	if !ok {
		return false
	}
	e.Payload = append([]byte(nil), d.p[d.i:end]...)
	d.i = end
	return true
}
