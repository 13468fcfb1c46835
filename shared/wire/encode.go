package wire

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
)

// The envelope's JSON is written by appending, not by json.Marshal: on the
// two servers' hot paths (the clinic's outbox rows, the cloud's down
// messages) reflection and json.Marshal compacting each payload again were
// most of the cost of encoding a change. The bytes are exactly
// json.Marshal's (the wire format and the outbox rows must not change by one
// byte): a string json.Marshal would escape is written by json.Marshal
// alone (AppendString), an envelope whose payload it would rewrite
// (compact, escape) by json.Marshal itself, as is one it would refuse,
// with its error. TestAppendJSONMatchesMarshal and
// FuzzAppendJSON hold the two to the same bytes.

// AppendJSON appends e's JSON to b: exactly the bytes json.Marshal(e)
// returns, or its error (b unchanged).
func (e *Envelope) AppendJSON(b []byte) ([]byte, error) {
	return e.appendJSON(b, false)
}

// AppendValid validates e (Validate) and appends its JSON to b, as
// AppendJSON, without scanning the payload for validity a second time.
func (e *Envelope) AppendValid(b []byte) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return b, err
	}
	return e.appendJSON(b, true)
}

// appendJSON is AppendJSON; payloadValid says e.Payload is known to be
// valid JSON (Validate checked it).
func (e *Envelope) appendJSON(b []byte, payloadValid bool) ([]byte, error) {
	start := len(b)
	if out, ok := e.appendFast(b, payloadValid); ok {
		return out, nil
	}
	j, err := json.Marshal(e)
	if err != nil {
		return b[:start], err
	}
	return append(b[:start], j...), nil
}

// appendFast appends e's JSON as json.Marshal writes it, or reports false
// when json.Marshal would write something else than the payload as it is
// (a payload it compacts or escapes or refuses) or refuse e (a time it
// refuses). The caller then falls back to json.Marshal.
func (e *Envelope) appendFast(b []byte, payloadValid bool) ([]byte, bool) {
	if len(e.Payload) > 0 && (!canonical(e.Payload) || !payloadValid && !validJSON(e.Payload)) {
		return b, false
	}
	b = append(b, `{"protocol":`...)
	b = strconv.AppendInt(b, int64(e.Protocol), 10)
	b = append(b, `,"type":`...)
	b = AppendString(b, string(e.Type))
	b = append(b, `,"clinic":`...)
	b = AppendID(b, e.Clinic)
	b = append(b, `,"origin":`...)
	b = AppendString(b, string(e.Origin))
	b = append(b, `,"change_id":`...)
	b = AppendID(b, e.ChangeID)
	b = append(b, `,"kind":`...)
	b = AppendString(b, string(e.Kind))
	b = append(b, `,"record_id":`...)
	b = AppendID(b, e.RecordID)
	b = append(b, `,"base_version":`...)
	b = AppendVersion(b, e.BaseVersion)
	b = append(b, `,"new_version":`...)
	b = AppendVersion(b, e.NewVersion)
	if e.Deleted {
		b = append(b, `,"deleted":true`...)
	}
	if e.CloudSeq != 0 {
		b = append(b, `,"cloud_seq":`...)
		b = strconv.AppendInt(b, e.CloudSeq, 10)
	}
	b = append(b, `,"at":`...)
	b, ok := AppendTime(b, e.At)
	if !ok {
		return b, false
	}
	if len(e.Payload) > 0 {
		b = append(b, `,"payload":`...)
		b = append(b, e.Payload...)
	}
	b = AppendOmitEmpty(b, `,"conflict":`, e.Conflict)
	if e.ConflictOf != 0 {
		b = append(b, `,"conflict_of":`...)
		b = AppendID(b, e.ConflictOf)
	}
	if e.Fence != 0 {
		b = append(b, `,"fence":`...)
		b = strconv.AppendInt(b, e.Fence, 10)
	}
	if e.Unfenced {
		b = append(b, `,"unfenced":true`...)
	}
	if e.Unsync {
		b = append(b, `,"unsync":true`...)
	}
	if e.SavedBy != 0 {
		b = append(b, `,"saved_by":`...)
		b = AppendID(b, e.SavedBy)
	}
	b = AppendOmitEmpty(b, `,"saved_by_name":`, e.SavedByName)
	return append(b, '}'), true
}

// appendBatch appends the JSON of a batch of protocol and clinic whose
// changes are b's (json.Marshal's bytes, as appendJSON).
func appendBatch(b []byte, batch *Batch, payloadValid bool) ([]byte, error) {
	b = appendBatchHead(b, batch.Protocol, batch.Clinic)
	if batch.Changes == nil {
		return append(b, "null}"...), nil
	}
	b = append(b, '[')
	for i := range batch.Changes {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = batch.Changes[i].appendJSON(b, payloadValid); err != nil {
			return b, err
		}
	}
	return append(b, ']', '}'), nil
}

// appendBatchHead appends a batch's JSON up to its changes' value.
func appendBatchHead(b []byte, protocol int, clinic ids.ID) []byte {
	b = append(b, `{"protocol":`...)
	b = strconv.AppendInt(b, int64(protocol), 10)
	b = append(b, `,"clinic":`...)
	b = AppendID(b, clinic)
	return append(b, `,"changes":`...)
}

// encodedSize is about the size of the batch's JSON, to allocate it once.
func encodedSize(batch *Batch) int {
	n := 64
	for i := range batch.Changes {
		n += 400 + len(batch.Changes[i].Payload) + len(batch.Changes[i].SavedByName)
	}
	return n
}

// The appenders below write a value exactly as json.Marshal writes it
// inside a struct; the other hand encoders of JSON (the clinic's API
// answers, the viewers' events) use them too. TestAppendersMatchMarshal
// and FuzzAppenders hold them to json.Marshal.

// AppendID appends id as ids.ID.MarshalJSON writes it (a JSON string).
func AppendID(b []byte, id ids.ID) []byte {
	b = append(b, '"')
	b = strconv.AppendInt(b, int64(id), 10)
	return append(b, '"')
}

// AppendVersion appends v as json.Marshal writes it (its text, a JSON string).
func AppendVersion(b []byte, v version.V) []byte {
	b = append(b, '"')
	b = strconv.AppendUint(b, uint64(v.A), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(v.B), 10)
	return append(b, '"')
}

// AppendString appends s as json.Marshal writes a string. One it writes
// between quotes as it is (plain), as nearly every string the servers
// write is, is copied; any other is left to json.Marshal, whose escaping
// (with HTML escaping, invalid UTF-8 as \ufffd) is then exactly the same.
func AppendString(b []byte, s string) []byte {
	if plain(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	j, _ := json.Marshal(s) // a string always encodes
	return append(b, j...)
}

// AppendOmitEmpty appends a string field json.Marshal leaves out when it
// is empty (omitempty): key (with its comma and colon) and s, or nothing.
func AppendOmitEmpty(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return AppendString(append(b, key...), s)
}

// AppendTime appends t as json.Marshal writes a time.Time
// (Time.MarshalJSON: RFC 3339 with nanoseconds, between quotes). It
// reports false, with b as it was, where json.Marshal fails (a year
// outside 0–9999, a zone offset of 24 hours or more): the caller then
// takes json.Marshal's error.
func AppendTime(b []byte, t time.Time) ([]byte, bool) {
	out, err := t.AppendText(append(b, '"')) // MarshalJSON's text, refused where it refuses
	if err != nil {
		return b, false
	}
	return append(out, '"'), true
}

// plain reports whether json.Marshal writes s between quotes as it is:
// valid UTF-8 with nothing it escapes (control characters, '"', '\\', the
// HTML characters '<', '>' and '&', U+2028 and U+2029).
func plain(s string) bool {
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= utf8.RuneSelf:
			ascii = false
		case c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&':
			return false
		}
	}
	return ascii || utf8.ValidString(s) && !strings.Contains(s, "\u2028") && !strings.Contains(s, "\u2029")
}

// canonical reports whether json.Marshal writes the JSON p (a
// json.RawMessage) as it is: p has no whitespace outside its strings and
// nothing the encoder escapes in them ('<', '>', '&', U+2028, U+2029), so
// compacting it with HTML escaping, as json.Marshal does, leaves it alone.
// It does not check that p is JSON.
func canonical(p []byte) bool {
	in := false
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '"':
			in = !in
		case '\\':
			if in {
				i++
			}
		case ' ', '\t', '\n', '\r':
			if !in {
				return false
			}
		case '<', '>', '&':
			return false
		case 0xE2:
			if i+2 < len(p) && p[i+1] == 0x80 && p[i+2]&^1 == 0xA8 {
				return false
			}
		}
	}
	return true
}
