// Package lockjson encodes and decodes the JSON of lockd's lock calls
// (acquire, renew, release, batch: requests and answers) without
// reflection. In the lock benchmark's profiles encoding/json was the largest
// single cost of lockd and of its client.
//
// It never decides anything encoding/json would decide otherwise. Decode
// reads only the plain form (known keys spelled exactly, each once; strings
// without escapes; integers without fraction or exponent; no null; nothing
// after the value but white space) and reports false for anything else, so
// that the caller runs encoding/json on the same bytes, which then accepts
// or refuses it, with its own error, exactly as before. Append writes what
// json.Marshal writes, byte for byte (a test checks both against
// encoding/json), or reports false.
package lockjson

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
)

// Decode decodes b into v (a pointer to a zero lock request or answer:
// AcquireRequest, RenewRequest, ReleaseRequest, BatchRequest, Grant,
// Renewal, Released, BatchResponse). It reports false, leaving v in any
// state, when b is not in the plain form or v of another type: decode b with
// encoding/json into a zero value then.
func Decode(b []byte, v any) bool {
	d := decoder{b: b}
	d.ws()
	switch v := v.(type) {
	case *lockapi.AcquireRequest:
		d.acquire(v)
	case *lockapi.RenewRequest:
		d.renew(v)
	case *lockapi.ReleaseRequest:
		d.release(v)
	case *lockapi.BatchRequest:
		d.batchRequest(v)
	case *lockapi.Grant:
		d.grant(v)
	case *lockapi.Renewal:
		d.renewal(v)
	case *lockapi.Released:
		d.released(v)
	case *lockapi.BatchResponse:
		d.batchResponse(v)
	default:
		return false
	}
	d.ws()
	return d.ok && d.i == len(d.b)
}

// decoder reads b from i; ok turns false at the first thing it does not
// read, and every method then does nothing.
type decoder struct {
	b  []byte
	i  int
	ok bool
}

func (d *decoder) fail() { d.ok = false }

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek is the next byte after white space (0 at the end).
func (d *decoder) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *decoder) expect(c byte) {
	if d.peek() != c {
		d.fail()
		return
	}
	d.i++
}

// object reads an object, calling field for each key: field reports
// whether it knows the key and read its value. A key seen twice, or one
// field does not know, ends the plain form. seen holds one bit per key, set
// by field's index.
func (d *decoder) object(field func(key []byte) int) {
	d.ok = d.ok && d.peek() == '{'
	if !d.ok {
		return
	}
	d.i++
	if d.peek() == '}' {
		d.i++
		return
	}
	var seen uint64
	for d.ok {
		key := d.rawString()
		d.expect(':')
		if !d.ok {
			return
		}
		n := field(key)
		if n < 0 || seen&(1<<n) != 0 {
			d.fail()
			return
		}
		seen |= 1 << n
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return
		default:
			d.fail()
		}
	}
}

// rawString reads a string without escapes or control characters; its
// bytes must be valid UTF-8 (encoding/json replaces invalid bytes).
func (d *decoder) rawString() []byte {
	if !d.ok || d.peek() != '"' {
		d.fail()
		return nil
	}
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		c := d.b[j]
		switch {
		case c == '"':
			s := d.b[start:j]
			if !ascii && !utf8.Valid(s) {
				d.fail()
				return nil
			}
			d.i = j + 1
			return s
		case c == '\\' || c < 0x20:
			d.fail()
			return nil
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	d.fail()
	return nil
}

func (d *decoder) str(dst *string) {
	if s := d.rawString(); d.ok {
		*dst = string(s)
	}
}

// number reads an integer literal: JSON's grammar without fraction or
// exponent.
func (d *decoder) number() []byte {
	if !d.ok {
		return nil
	}
	d.ws()
	start := d.i
	j := start
	if j < len(d.b) && d.b[j] == '-' {
		j++
	}
	digits := j
	for j < len(d.b) && d.b[j] >= '0' && d.b[j] <= '9' {
		j++
	}
	switch {
	case j == digits, // no digit
		d.b[digits] == '0' && j-digits > 1, // leading zero: not JSON
		j < len(d.b) && (d.b[j] == '.' || d.b[j] == 'e' || d.b[j] == 'E'):
		d.fail()
		return nil
	}
	d.i = j
	return d.b[start:j]
}

func (d *decoder) int64(dst *int64) {
	lit := d.number()
	if !d.ok {
		return
	}
	n, err := strconv.ParseInt(string(lit), 10, 64)
	if err != nil {
		d.fail()
		return
	}
	*dst = n
}

func (d *decoder) int(dst *int) {
	var n int64
	if d.int64(&n); d.ok && int64(int(n)) == n {
		*dst = int(n)
	} else {
		d.fail()
	}
}

// id reads a clinic id, "42" or 42, in digits without a sign or a leading
// zero (what ids.ID.UnmarshalJSON accepts, less its odd cases).
func (d *decoder) id(dst *ids.ID) {
	var lit []byte
	if d.peek() == '"' {
		lit = d.rawString()
	} else {
		lit = d.number()
	}
	if !d.ok || len(lit) == 0 || lit[0] < '0' || lit[0] > '9' || lit[0] == '0' && len(lit) > 1 {
		d.fail()
		return
	}
	for _, c := range lit {
		if c < '0' || c > '9' {
			d.fail()
			return
		}
	}
	v, err := ids.Parse(string(lit))
	if err != nil {
		d.fail()
		return
	}
	*dst = v
}

func (d *decoder) bool(dst *bool) {
	d.ws()
	switch {
	case !d.ok:
	case len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "true":
		*dst = true
		d.i += 4
	case len(d.b)-d.i >= 5 && string(d.b[d.i:d.i+5]) == "false":
		*dst = false
		d.i += 5
	default:
		d.fail()
	}
}

// time reads a time as time.Time's own UnmarshalJSON does.
func (d *decoder) time(dst *time.Time) {
	d.ws()
	start := d.i
	if d.rawString(); !d.ok {
		return
	}
	if err := dst.UnmarshalJSON(d.b[start:d.i]); err != nil {
		d.fail()
	}
}

func (d *decoder) holder(h *lockapi.Holder) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "clinic":
			d.id(&h.Clinic)
			return 0
		case "side":
			var s string
			d.str(&s)
			h.Side = lockapi.Side(s)
			return 1
		case "client":
			d.str(&h.Client)
			return 2
		case "user":
			d.str(&h.User)
			return 3
		}
		return -1
	})
}

func (d *decoder) acquire(r *lockapi.AcquireRequest) {
	d.ok = true
	d.acquireBody(r)
}

func (d *decoder) acquireBody(r *lockapi.AcquireRequest) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "resource":
			d.str(&r.Resource)
			return 0
		case "holder":
			d.holder(&r.Holder)
			return 1
		case "ttl_ms":
			d.int64(&r.TTLMillis)
			return 2
		case "version":
			d.str(&r.Version)
			return 3
		}
		return -1
	})
}

func (d *decoder) renew(r *lockapi.RenewRequest) {
	d.ok = true
	d.renewBody(r)
}

func (d *decoder) renewBody(r *lockapi.RenewRequest) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "resource":
			d.str(&r.Resource)
			return 0
		case "clinic":
			d.id(&r.Clinic)
			return 1
		case "token":
			d.int64(&r.Token)
			return 2
		case "secret":
			d.str(&r.Secret)
			return 3
		case "ttl_ms":
			d.int64(&r.TTLMillis)
			return 4
		}
		return -1
	})
}

func (d *decoder) release(r *lockapi.ReleaseRequest) {
	d.ok = true
	d.releaseBody(r)
}

func (d *decoder) releaseBody(r *lockapi.ReleaseRequest) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "resource":
			d.str(&r.Resource)
			return 0
		case "clinic":
			d.id(&r.Clinic)
			return 1
		case "token":
			d.int64(&r.Token)
			return 2
		case "secret":
			d.str(&r.Secret)
			return 3
		case "saved_version":
			d.str(&r.SavedVersion)
			return 4
		}
		return -1
	})
}

// array reads an array, calling elem for each element.
func (d *decoder) array(elem func()) {
	d.ok = d.ok && d.peek() == '['
	if !d.ok {
		return
	}
	d.i++
	if d.peek() == ']' {
		d.i++
		return
	}
	for d.ok {
		elem()
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return
		default:
			d.fail()
		}
	}
}

func (d *decoder) batchRequest(r *lockapi.BatchRequest) {
	d.ok = true
	d.object(func(k []byte) int {
		if string(k) != "ops" {
			return -1
		}
		r.Ops = []lockapi.BatchOp{}
		d.array(func() {
			var op lockapi.BatchOp
			d.object(func(k []byte) int {
				switch string(k) {
				case "acquire":
					op.Acquire = new(lockapi.AcquireRequest)
					d.acquireBody(op.Acquire)
					return 0
				case "renew":
					op.Renew = new(lockapi.RenewRequest)
					d.renewBody(op.Renew)
					return 1
				case "release":
					op.Release = new(lockapi.ReleaseRequest)
					d.releaseBody(op.Release)
					return 2
				}
				return -1
			})
			r.Ops = append(r.Ops, op)
		})
		return 0
	})
}

func (d *decoder) grant(g *lockapi.Grant) {
	d.ok = true
	d.grantBody(g)
}

func (d *decoder) grantBody(g *lockapi.Grant) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "resource":
			d.str(&g.Resource)
			return 0
		case "holder":
			d.holder(&g.Holder)
			return 1
		case "token":
			d.int64(&g.Token)
			return 2
		case "since":
			d.time(&g.Since)
			return 3
		case "expires_at":
			d.time(&g.ExpiresAt)
			return 4
		case "version":
			d.str(&g.Version)
			return 5
		case "secret":
			d.str(&g.Secret)
			return 6
		case "saved_version":
			d.str(&g.SavedVersion)
			return 7
		}
		return -1
	})
}

func (d *decoder) renewal(r *lockapi.Renewal) {
	d.ok = true
	d.renewalBody(r)
}

func (d *decoder) renewalBody(r *lockapi.Renewal) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "resource":
			d.str(&r.Resource)
			return 0
		case "token":
			d.int64(&r.Token)
			return 1
		case "expires_at":
			d.time(&r.ExpiresAt)
			return 2
		}
		return -1
	})
}

// released reads a release's answer; a force-release's (with its lock) is
// not in the plain form.
func (d *decoder) released(r *lockapi.Released) {
	d.ok = true
	d.releasedBody(r)
}

func (d *decoder) releasedBody(r *lockapi.Released) {
	d.object(func(k []byte) int {
		switch string(k) {
		case "resource":
			d.str(&r.Resource)
			return 0
		case "released":
			d.bool(&r.Released)
			return 1
		}
		return -1
	})
}

// batchResponse reads results of status 200; one with an error is not in
// the plain form.
func (d *decoder) batchResponse(r *lockapi.BatchResponse) {
	d.ok = true
	d.object(func(k []byte) int {
		if string(k) != "results" {
			return -1
		}
		r.Results = []lockapi.BatchResult{}
		d.array(func() {
			var res lockapi.BatchResult
			d.object(func(k []byte) int {
				switch string(k) {
				case "status":
					d.int(&res.Status)
					return 0
				case "grant":
					res.Grant = new(lockapi.Grant)
					d.grantBody(res.Grant)
					return 1
				case "renewal":
					res.Renewal = new(lockapi.Renewal)
					d.renewalBody(res.Renewal)
					return 2
				case "released":
					res.Released = new(lockapi.Released)
					d.releasedBody(res.Released)
					return 3
				}
				return -1
			})
			r.Results = append(r.Results, res)
		})
		return 0
	})
}

// Append appends v (a lock request or answer, by value or pointer, as
// Decode takes) as json.Marshal writes it, and reports false, with b
// unchanged, when it cannot (then use encoding/json).
func Append(b []byte, v any) ([]byte, bool) {
	e := encoder{b: b, ok: true}
	switch v := v.(type) {
	case lockapi.AcquireRequest:
		e.acquire(&v)
	case *lockapi.AcquireRequest:
		e.acquire(v)
	case lockapi.RenewRequest:
		e.renew(&v)
	case *lockapi.RenewRequest:
		e.renew(v)
	case lockapi.ReleaseRequest:
		e.release(&v)
	case *lockapi.ReleaseRequest:
		e.release(v)
	case lockapi.BatchRequest:
		e.batchRequest(&v)
	case *lockapi.BatchRequest:
		e.batchRequest(v)
	case lockapi.Grant:
		e.grant(&v)
	case *lockapi.Grant:
		e.grant(v)
	case lockapi.Renewal:
		e.renewal(&v)
	case *lockapi.Renewal:
		e.renewal(v)
	case lockapi.Released:
		e.released(&v)
	case *lockapi.Released:
		e.released(v)
	case lockapi.BatchResponse:
		e.batchResponse(&v)
	case *lockapi.BatchResponse:
		e.batchResponse(v)
	default:
		return b, false
	}
	if !e.ok {
		return b, false
	}
	return e.b, true
}

type encoder struct {
	b  []byte
	ok bool
}

func (e *encoder) raw(s string) { e.b = append(e.b, s...) }

// str writes s as encoding/json does (which escapes <, > and & for HTML,
// and more): plain printable ASCII as is, anything else by json.Marshal.
func (e *encoder) str(s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil {
				e.ok = false
				return
			}
			e.b = append(e.b, q...)
			return
		}
	}
	e.b = append(e.b, '"')
	e.b = append(e.b, s...)
	e.b = append(e.b, '"')
}

func (e *encoder) int(n int64) { e.b = strconv.AppendInt(e.b, n, 10) }

// time writes t as time.Time's MarshalJSON does (RFC 3339 with the
// fraction it has, refusing what that refuses).
func (e *encoder) time(t time.Time) {
	e.b = append(e.b, '"')
	var err error
	if e.b, err = t.AppendText(e.b); err != nil {
		e.ok = false
		return
	}
	e.b = append(e.b, '"')
}

func (e *encoder) id(id ids.ID) {
	e.b = append(e.b, '"')
	e.b = strconv.AppendInt(e.b, int64(id), 10)
	e.b = append(e.b, '"')
}

func (e *encoder) holder(h *lockapi.Holder) {
	e.raw(`{"clinic":`)
	e.id(h.Clinic)
	e.raw(`,"side":`)
	e.str(string(h.Side))
	e.raw(`,"client":`)
	e.str(h.Client)
	e.raw(`,"user":`)
	e.str(h.User)
	e.raw(`}`)
}

func (e *encoder) acquire(r *lockapi.AcquireRequest) {
	e.raw(`{"resource":`)
	e.str(r.Resource)
	e.raw(`,"holder":`)
	e.holder(&r.Holder)
	if r.TTLMillis != 0 {
		e.raw(`,"ttl_ms":`)
		e.int(r.TTLMillis)
	}
	e.raw(`,"version":`)
	e.str(r.Version)
	e.raw(`}`)
}

func (e *encoder) renew(r *lockapi.RenewRequest) {
	e.raw(`{"resource":`)
	e.str(r.Resource)
	e.raw(`,"clinic":`)
	e.id(r.Clinic)
	e.raw(`,"token":`)
	e.int(r.Token)
	e.raw(`,"secret":`)
	e.str(r.Secret)
	if r.TTLMillis != 0 {
		e.raw(`,"ttl_ms":`)
		e.int(r.TTLMillis)
	}
	e.raw(`}`)
}

func (e *encoder) release(r *lockapi.ReleaseRequest) {
	e.raw(`{"resource":`)
	e.str(r.Resource)
	e.raw(`,"clinic":`)
	e.id(r.Clinic)
	e.raw(`,"token":`)
	e.int(r.Token)
	e.raw(`,"secret":`)
	e.str(r.Secret)
	if r.SavedVersion != "" {
		e.raw(`,"saved_version":`)
		e.str(r.SavedVersion)
	}
	e.raw(`}`)
}

func (e *encoder) batchRequest(r *lockapi.BatchRequest) {
	if r.Ops == nil {
		e.ok = false // null
		return
	}
	e.raw(`{"ops":[`)
	for i := range r.Ops {
		if i > 0 {
			e.raw(`,`)
		}
		op := &r.Ops[i]
		sep := `{`
		if op.Acquire != nil {
			e.raw(sep + `"acquire":`)
			e.acquire(op.Acquire)
			sep = `,`
		}
		if op.Renew != nil {
			e.raw(sep + `"renew":`)
			e.renew(op.Renew)
			sep = `,`
		}
		if op.Release != nil {
			e.raw(sep + `"release":`)
			e.release(op.Release)
			sep = `,`
		}
		if sep == `{` {
			e.raw(`{`)
		}
		e.raw(`}`)
	}
	e.raw(`]}`)
}

func (e *encoder) lock(l *lockapi.Lock) {
	e.raw(`{"resource":`)
	e.str(l.Resource)
	e.raw(`,"holder":`)
	e.holder(&l.Holder)
	e.raw(`,"token":`)
	e.int(l.Token)
	e.raw(`,"since":`)
	e.time(l.Since)
	e.raw(`,"expires_at":`)
	e.time(l.ExpiresAt)
	e.raw(`,"version":`)
	e.str(l.Version)
}

func (e *encoder) grant(g *lockapi.Grant) {
	e.lock(&g.Lock)
	e.raw(`,"secret":`)
	e.str(g.Secret)
	if g.SavedVersion != "" {
		e.raw(`,"saved_version":`)
		e.str(g.SavedVersion)
	}
	e.raw(`}`)
}

func (e *encoder) renewal(r *lockapi.Renewal) {
	e.raw(`{"resource":`)
	e.str(r.Resource)
	e.raw(`,"token":`)
	e.int(r.Token)
	e.raw(`,"expires_at":`)
	e.time(r.ExpiresAt)
	e.raw(`}`)
}

func (e *encoder) released(r *lockapi.Released) {
	e.raw(`{"resource":`)
	e.str(r.Resource)
	if r.Released {
		e.raw(`,"released":true`)
	} else {
		e.raw(`,"released":false`)
	}
	if r.Lock != nil {
		e.raw(`,"lock":`)
		e.lock(r.Lock)
		e.raw(`}`)
	}
	e.raw(`}`)
}

func (e *encoder) batchResponse(r *lockapi.BatchResponse) {
	if r.Results == nil {
		e.ok = false // null
		return
	}
	e.raw(`{"results":[`)
	for i := range r.Results {
		if i > 0 {
			e.raw(`,`)
		}
		res := &r.Results[i]
		if res.Error != nil {
			// Rare (a refusal): encoding/json writes it.
			q, err := json.Marshal(res)
			if err != nil {
				e.ok = false
				return
			}
			e.b = append(e.b, q...)
			continue
		}
		e.raw(`{"status":`)
		e.int(int64(res.Status))
		if res.Grant != nil {
			e.raw(`,"grant":`)
			e.grant(res.Grant)
		}
		if res.Renewal != nil {
			e.raw(`,"renewal":`)
			e.renewal(res.Renewal)
		}
		if res.Released != nil {
			e.raw(`,"released":`)
			e.released(res.Released)
		}
		e.raw(`}`)
	}
	e.raw(`]}`)
}
