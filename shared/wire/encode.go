package wire

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
)

// The envelope's JSON is written by appending, not by json.Marshal: on the
// two servers' hot paths (the clinic's outbox rows, the cloud's down
// messages) reflection and json.Marshal compacting each payload again were
// most of the cost of encoding a change. The bytes are exactly
// json.Marshal's (the wire format and the outbox rows must not change by one
// byte): an envelope whose strings or payload json.Marshal would rewrite
// (escape, compact) is encoded by json.Marshal itself, as is one it would
// refuse, with its error. TestAppendJSONMatchesMarshal and
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
// when json.Marshal would write something else than the fields as they
// are: a string it escapes, a payload it compacts or escapes or refuses, a
// time it refuses. The caller then falls back to json.Marshal.
func (e *Envelope) appendFast(b []byte, payloadValid bool) ([]byte, bool) {
	if !plain(string(e.Type)) || !plain(string(e.Origin)) || !plain(string(e.Kind)) ||
		!plain(e.Conflict) || !plain(e.SavedByName) {
		return b, false
	}
	if len(e.Payload) > 0 && (!canonical(e.Payload) || !payloadValid && !validJSON(e.Payload)) {
		return b, false
	}
	b = append(b, `{"protocol":`...)
	b = strconv.AppendInt(b, int64(e.Protocol), 10)
	b = append(b, `,"type":"`...)
	b = append(b, e.Type...)
	b = append(b, `","clinic":`...)
	b = appendID(b, e.Clinic)
	b = append(b, `,"origin":"`...)
	b = append(b, e.Origin...)
	b = append(b, `","change_id":`...)
	b = appendID(b, e.ChangeID)
	b = append(b, `,"kind":"`...)
	b = append(b, e.Kind...)
	b = append(b, `","record_id":`...)
	b = appendID(b, e.RecordID)
	b = append(b, `,"base_version":`...)
	b = appendVersion(b, e.BaseVersion)
	b = append(b, `,"new_version":`...)
	b = appendVersion(b, e.NewVersion)
	if e.Deleted {
		b = append(b, `,"deleted":true`...)
	}
	if e.CloudSeq != 0 {
		b = append(b, `,"cloud_seq":`...)
		b = strconv.AppendInt(b, e.CloudSeq, 10)
	}
	b = append(b, `,"at":"`...)
	// Time.MarshalJSON's text: RFC 3339 with nanoseconds, refusing a year
	// outside 0–9999 and a zone offset of 24 hours or more.
	b, err := e.At.AppendText(b)
	if err != nil {
		return b, false
	}
	b = append(b, '"')
	if len(e.Payload) > 0 {
		b = append(b, `,"payload":`...)
		b = append(b, e.Payload...)
	}
	if e.Conflict != "" {
		b = append(b, `,"conflict":"`...)
		b = append(b, e.Conflict...)
		b = append(b, '"')
	}
	if e.ConflictOf != 0 {
		b = append(b, `,"conflict_of":`...)
		b = appendID(b, e.ConflictOf)
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
		b = appendID(b, e.SavedBy)
	}
	if e.SavedByName != "" {
		b = append(b, `,"saved_by_name":"`...)
		b = append(b, e.SavedByName...)
		b = append(b, '"')
	}
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
	b = appendID(b, clinic)
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

// appendID appends id as ids.ID.MarshalJSON writes it (a JSON string).
func appendID(b []byte, id ids.ID) []byte {
	b = append(b, '"')
	b = strconv.AppendInt(b, int64(id), 10)
	return append(b, '"')
}

// appendVersion appends v as json.Marshal writes it (its text, a JSON string).
func appendVersion(b []byte, v version.V) []byte {
	b = append(b, '"')
	b = strconv.AppendUint(b, uint64(v.A), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(v.B), 10)
	return append(b, '"')
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
