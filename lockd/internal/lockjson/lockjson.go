// Package lockjson encodes and decodes the JSON of lockd's lock calls
// (acquire, renew, release, batch: requests and answers) with
// github.com/segmentio/encoding/json instead of encoding/json. In the lock
// benchmark's profiles encoding/json was the largest single cost of lockd
// and of its client.
//
// Why that library: it aims at exact encoding/json compatibility (the same
// output, HTML escaping and all), it can refuse unknown fields and keys
// that match a field only in another case, and it returns what follows the
// value, so the fast path can be made at least as strict as lockd's
// httpapi.Decode. In BenchmarkCodecs (encode and decode of a batch of 8
// acquires and its answer) it took 12 µs against 53 µs for encoding/json
// and 11 µs for the hand-written codec it replaced; github.com/goccy/go-json
// took 21 µs with unknown fields refused (only its streaming Decoder can)
// and reads keys in any case.
//
// It never decides anything encoding/json would decide otherwise. Decode
// reports false for anything it does not read strictly (an unknown key, a
// key in another case, anything after the value but white space, or any
// error), and the caller then runs encoding/json on the same bytes, which
// accepts or refuses it, with its own error, exactly as before. Append
// writes what json.Marshal writes, byte for byte, or reports false. The
// tests and a fuzz target check both against encoding/json.
package lockjson

import (
	"bytes"
	"sync"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/scsync/scsync/lockd/lockapi"
)

// parseFlags make the library refuse what httpapi.Decode refuses (unknown
// fields) and what encoding/json would read otherwise (a key matching a
// field in another case: which of two such keys wins is for encoding/json
// to decide).
const parseFlags = json.DisallowUnknownFields | json.DontMatchCaseInsensitiveStructFields

// Decode decodes b into v (a pointer to a zero lock request or answer:
// AcquireRequest, RenewRequest, ReleaseRequest, BatchRequest, Grant,
// Renewal, Released, BatchResponse). It reports false, leaving v in any
// state, when it does not read b strictly or v is of another type: decode b
// with encoding/json into a zero value then.
func Decode(b []byte, v any) bool {
	if !lockType(v) {
		return false
	}
	rest, err := json.Parse(b, v, parseFlags)
	return err == nil && len(rest) == 0
}

// Append appends v (a lock request or answer, by value or pointer, as
// Decode takes) as json.Marshal writes it, and reports false, with b
// unchanged, when it cannot (then use encoding/json).
func Append(b []byte, v any) ([]byte, bool) {
	if !lockType(v) || !timesMarshal(v) {
		return b, false
	}
	out, err := json.Append(b, v, json.EscapeHTML)
	if err != nil {
		return b, false
	}
	return out, true
}

// lockType reports whether v is one of the types the tests compare with
// encoding/json.
func lockType(v any) bool {
	switch v.(type) {
	case lockapi.AcquireRequest, *lockapi.AcquireRequest,
		lockapi.RenewRequest, *lockapi.RenewRequest,
		lockapi.ReleaseRequest, *lockapi.ReleaseRequest,
		lockapi.BatchRequest, *lockapi.BatchRequest,
		lockapi.Grant, *lockapi.Grant,
		lockapi.Renewal, *lockapi.Renewal,
		lockapi.Released, *lockapi.Released,
		lockapi.BatchResponse, *lockapi.BatchResponse:
		return true
	}
	return false
}

// timesMarshal reports whether time.Time's MarshalJSON writes every time in
// v: the library writes a time itself, also one encoding/json refuses (a
// year outside [0,9999], a zone offset of 24 hours or more).
func timesMarshal(v any) bool {
	switch v := v.(type) {
	case lockapi.Grant:
		return lockTimes(&v.Lock)
	case *lockapi.Grant:
		return lockTimes(&v.Lock)
	case lockapi.Renewal:
		return timeMarshals(v.ExpiresAt)
	case *lockapi.Renewal:
		return timeMarshals(v.ExpiresAt)
	case lockapi.Released:
		return lockTimes(v.Lock)
	case *lockapi.Released:
		return lockTimes(v.Lock)
	case lockapi.BatchResponse:
		return resultTimes(v.Results)
	case *lockapi.BatchResponse:
		return resultTimes(v.Results)
	}
	return true // no time in it
}

func resultTimes(rs []lockapi.BatchResult) bool {
	for i := range rs {
		r := &rs[i]
		switch {
		case r.Grant != nil && !lockTimes(&r.Grant.Lock),
			r.Renewal != nil && !timeMarshals(r.Renewal.ExpiresAt),
			r.Released != nil && !lockTimes(r.Released.Lock),
			r.Error != nil && !lockTimes(r.Error.Lock):
			return false
		}
	}
	return true
}

func lockTimes(l *lockapi.Lock) bool {
	return l == nil || timeMarshals(l.Since) && timeMarshals(l.ExpiresAt)
}

func timeMarshals(t time.Time) bool {
	var buf [64]byte
	_, err := t.AppendText(buf[:0])
	return err == nil
}

// Buffer is a buffer from a pool shared by lockd's handlers and its Go
// client (a lock call's body is read into one, its answer written from
// one); give it back with PutBuffer.
func Buffer() *bytes.Buffer { return bufs.Get().(*bytes.Buffer) }

// PutBuffer returns b to the pool, emptied; an unusually large one is let go.
func PutBuffer(b *bytes.Buffer) {
	if b.Cap() > 64<<10 {
		return
	}
	b.Reset()
	bufs.Put(b)
}

var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}
