package events

import (
	"encoding/json"
	"strconv"

	"github.com/scsync/scsync/shared/wire"
)

// AppendJSON appends e's JSON to b: exactly the bytes json.Marshal(e)
// returns, or its error (b as it was). The Hub encodes every event it
// publishes (on the clinic, one an acceptance), and the Bus every one it
// sends: through json.Marshal, reflection over Event's fields was most of
// that. TestAppendJSONMatchesMarshal and FuzzAppendJSON hold the two to
// the same bytes, TestAppendJSONKnowsEveryField to Event's fields.
func (e *Event) AppendJSON(b []byte) ([]byte, error) {
	if out, ok := e.appendFast(b); ok {
		return out, nil
	}
	j, err := json.Marshal(e)
	if err != nil {
		return b, err
	}
	return append(b, j...), nil
}

// appendFast appends e's JSON, or reports false (b as it was) where
// json.Marshal fails: a time it refuses.
func (e *Event) appendFast(b []byte) ([]byte, bool) {
	start := len(b)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, e.Seq, 10)
	b = append(b, `,"type":`...)
	b = wire.AppendString(b, e.Type)
	if e.Clinic != 0 {
		b = append(b, `,"clinic":`...)
		b = wire.AppendID(b, e.Clinic)
	}
	b = wire.AppendOmitEmpty(b, `,"kind":`, e.Kind)
	if e.Record != 0 {
		b = append(b, `,"record":`...)
		b = wire.AppendID(b, e.Record)
	}
	b = wire.AppendOmitEmpty(b, `,"side":`, e.Side)
	b = wire.AppendOmitEmpty(b, `,"user":`, e.User)
	b = wire.AppendOmitEmpty(b, `,"client":`, e.Client)
	b = wire.AppendOmitEmpty(b, `,"session":`, e.Session)
	if !e.Version.IsZero() {
		b = append(b, `,"version":`...)
		b = wire.AppendVersion(b, e.Version)
	}
	b = wire.AppendOmitEmpty(b, `,"reason":`, e.Reason)
	if e.Unfenced {
		b = append(b, `,"unfenced":true`...)
	}
	if t := e.Transfer; t != nil {
		b = append(b, `,"transfer":{"state":`...)
		b = wire.AppendString(b, t.State)
		b = append(b, `,"bytes_done":`...)
		b = strconv.AppendInt(b, t.BytesDone, 10)
		b = append(b, `,"bytes_total":`...)
		b = strconv.AppendInt(b, t.BytesTotal, 10)
		b = wire.AppendOmitEmpty(b, `,"reason":`, t.Reason)
		b = append(b, '}')
	}
	b = append(b, `,"at":`...)
	b, ok := wire.AppendTime(b, e.At)
	if !ok {
		return b[:start], false
	}
	return append(b, '}'), true
}
