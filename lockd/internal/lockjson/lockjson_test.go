package lockjson

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/scsync/scsync/lockd/lockapi"
)

// strict decodes b as lockd's server does (httpapi.Decode): unknown fields
// and trailing values are errors.
func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errTrailing
	}
	return nil
}

var errTrailing = &json.SyntaxError{}

// zeros returns a fresh zero value of every type Decode takes.
func zeros() []any {
	return []any{
		new(lockapi.AcquireRequest), new(lockapi.RenewRequest), new(lockapi.ReleaseRequest), new(lockapi.BatchRequest),
		new(lockapi.Grant), new(lockapi.Renewal), new(lockapi.Released), new(lockapi.BatchResponse),
	}
}

// checkDecode fails when Decode accepts b into a type where encoding/json
// refuses it or reads another value.
func checkDecode(t *testing.T, b []byte) (fast int) {
	t.Helper()
	got, want := zeros(), zeros()
	for i := range got {
		if !Decode(b, got[i]) {
			continue
		}
		fast++
		if err := strict(b, want[i]); err != nil {
			t.Errorf("Decode(%q, %T) = true, encoding/json refuses it: %v", b, got[i], err)
			continue
		}
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("Decode(%q, %T) = %+v, encoding/json reads %+v", b, got[i], got[i], want[i])
		}
	}
	return fast
}

var (
	since   = time.Date(2026, 11, 22, 23, 17, 28, 65_000_000, time.UTC)
	expires = since.Add(30 * time.Second)
	holder  = lockapi.Holder{Clinic: 42, Side: lockapi.SideLocal, Client: "ws1", User: "anna"}
	grant   = lockapi.Grant{Lock: lockapi.Lock{Resource: "patient/7", Holder: holder, Token: 1795389448065107,
		Since: since, ExpiresAt: expires, Version: "2.0"}, Secret: "d6bca55e", SavedVersion: "3.1"}
)

// values are what lockd and its client send, plain and odd.
func values() []any {
	odd := holder
	odd.User = `Zoë <"x"> & \ ` + "\u2028\x01"
	odd.Client = "\xff"
	return []any{
		lockapi.AcquireRequest{Resource: "patient/7", Holder: holder, Version: "2.0"},
		lockapi.AcquireRequest{Resource: "patient/7", Holder: holder, TTLMillis: 30000, Version: "2.0"},
		lockapi.AcquireRequest{Resource: "p", Holder: odd, Version: "0.0"},
		lockapi.AcquireRequest{},
		lockapi.RenewRequest{Resource: "patient/7", Clinic: 42, Token: 1795389448065107, Secret: "s", TTLMillis: 60000},
		lockapi.RenewRequest{Resource: "patient/7", Clinic: 42, Token: -1, Secret: "s"},
		lockapi.ReleaseRequest{Resource: "patient/7", Clinic: 42, Token: 1, Secret: "s"},
		lockapi.ReleaseRequest{Resource: "patient/7", Clinic: 42, Token: 1, Secret: "s", SavedVersion: "2.1"},
		lockapi.BatchRequest{Ops: []lockapi.BatchOp{
			{Acquire: &lockapi.AcquireRequest{Resource: "a", Holder: holder, Version: "1.0"}},
			{Renew: &lockapi.RenewRequest{Resource: "b", Clinic: 7, Token: 2, Secret: "x"}},
			{Release: &lockapi.ReleaseRequest{Resource: "c", Clinic: 7, Token: 3, Secret: "y", SavedVersion: "1.2"}},
			{},
			{Renew: &lockapi.RenewRequest{}, Release: &lockapi.ReleaseRequest{}},
		}},
		lockapi.BatchRequest{Ops: []lockapi.BatchOp{}},
		lockapi.BatchRequest{},
		grant,
		lockapi.Grant{Lock: lockapi.Lock{Holder: odd, Since: since.Add(123), ExpiresAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		lockapi.Grant{Lock: lockapi.Lock{Holder: holder, Since: since.In(time.FixedZone("x", 3600+30)), ExpiresAt: expires}},
		lockapi.Renewal{Resource: "patient/7", Token: 5, ExpiresAt: expires},
		lockapi.Released{Resource: "patient/7", Released: true},
		lockapi.Released{Resource: "patient/7", Lock: &grant.Lock},
		lockapi.BatchResponse{Results: []lockapi.BatchResult{
			{Status: 200, Grant: &grant},
			{Status: 200, Renewal: &lockapi.Renewal{Resource: "r", Token: 1, ExpiresAt: expires}},
			{Status: 200, Released: &lockapi.Released{Resource: "r", Released: true}},
			{Status: 409, Error: &lockapi.Error{Code: lockapi.CodeHeld, Message: "held <by> anna", Lock: &grant.Lock}},
			{Status: 403, Error: &lockapi.Error{Code: lockapi.CodeForbidden, Message: "no"}},
		}},
		lockapi.BatchResponse{},
	}
}

func TestAppendWritesWhatMarshalWrites(t *testing.T) {
	for _, v := range values() {
		want, werr := json.Marshal(v)
		got, ok := Append([]byte("prefix"), v)
		switch {
		case werr != nil && ok:
			t.Errorf("Append(%+v) = %s, json.Marshal fails: %v", v, got, werr)
		case werr == nil && ok && string(got) != "prefix"+string(want):
			t.Errorf("Append(%+v) =\n%s, json.Marshal writes\n%s", v, got, want)
		case !ok && string(got) != "prefix":
			t.Errorf("Append(%+v) = false and %q, want b unchanged", v, got)
		}
		// Pointers as well as values.
		p := reflect.New(reflect.TypeOf(v))
		p.Elem().Set(reflect.ValueOf(v))
		if pgot, pok := Append(nil, p.Interface()); pok != ok || pok && !bytes.Equal(pgot, want) {
			t.Errorf("Append(&%+v) = %s, %v; want %s, %v", v, pgot, pok, want, ok)
		}
	}
	// Everything the client and lockd send in the everyday case is written
	// by the library, not by encoding/json.
	for _, v := range values()[:2] {
		if _, ok := Append(nil, v); !ok {
			t.Errorf("Append(%+v) = false, want true", v)
		}
	}
	if _, ok := Append(nil, grant); !ok {
		t.Errorf("Append(grant) = false, want true")
	}
	if _, ok := Append(nil, lockapi.Error{}); ok {
		t.Errorf("Append(lockapi.Error{}) = true, want false (not a type it writes)")
	}
}

func TestDecodeReadsWhatEncodingJSONReads(t *testing.T) {
	// What Append and json.Marshal write: read by the library as
	// encoding/json reads it (or left to encoding/json).
	for i, v := range values() {
		b, err := json.Marshal(v)
		if err != nil {
			continue
		}
		n := checkDecode(t, b)
		if i <= 1 && n == 0 {
			t.Errorf("Decode(%s) = false for every type, want it read by the library", b)
		}
	}
	for _, in := range []string{
		` {"resource":"patient/7","holder":{"clinic":42,"side":"local","client":"ws1","user":"anna"},"version":"2.0"} ` + "\n",
		`{"resource":"patient/7","clinic":"42","token":-0,"secret":"s"}`,
		`{"resource":"patient/7","Resource":"x","clinic":"42","token":1,"secret":"s"}`,
		`{"resource":"patient/7","resource":"x","clinic":"42","token":1,"secret":"s"}`,
		`{"resource":"patient/7","clinic":"042","token":1,"secret":"s"}`,
		`{"resource":"patient/7","clinic":"+42","token":1,"secret":"s"}`,
		`{"resource":"patient/7","clinic":-42,"token":1,"secret":"s"}`,
		`{"resource":"patient/7","clinic":4.2,"token":1,"secret":"s"}`,
		`{"resource":"patient/7","clinic":"42","token":9223372036854775808,"secret":"s"}`,
		`{"resource":"patient/7","clinic":"42","token":1e3,"secret":"s"}`,
		`{"resource":"patient/7","clinic":"42","token":01,"secret":"s"}`,
		`{"resource":"patient/7","clinic":"42","token":"1","secret":"s"}`,
		`{"resource":"pat\u0069ent/7","clinic":"42","token":1,"secret":"s"}`,
		`{"resource":null,"clinic":"42","token":1,"secret":"s"}`,
		"{\"resource\":\"p\xff\",\"clinic\":\"42\",\"token\":1,\"secret\":\"s\"}",
		"{\"resource\":\"p\x01\",\"clinic\":\"42\",\"token\":1,\"secret\":\"s\"}",
		`{"resource":"p","clinic":"42","token":1,"secret":"s"}}`,
		`{"resource":"p","clinic":"42","token":1,"secret":"s"}]`,
		`{"resource":"p","clinic":"42","token":1,"secret":"s"} {}`,
		`{"resource":"p","clinic":"42","token":1,"secret":"s",}`,
		`{"resource":"p","clinic":"42","token":1,"secret":"s"`,
		`{"resource":"p","unknown":1}`,
		`{}`, ``, `null`, `[]`, `{"ops":null}`, `{"ops":[null]}`, `{"ops":[{"acquire":null}]}`,
		`{"ops":[{"release":{"resource":"p","clinic":1,"token":1,"secret":"s"},"release":{}}]}`,
		`{"results":[{"status":200,"released":{"resource":"p","released":true}}]}`,
		`{"results":[{"status":200,"released":{"resource":"p","released":tru}}]}`,
		`{"results":[{"status":200.0}]}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T23:17:58.065Z"}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T23:17:58.065"}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22 23:17:58Z"}`,
		`{"resource":"p","holder":{"clinic":1,"side":"local","client":"c","user":"u","clinic":2}}`,
		`{"ops":[{"acquire":{"resource":"a"},"acquire":{"version":"1"}}]}`,
		`{"results":[{"status":200,"grant":{"token":1},"grant":{"secret":"s"}}]}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T23:17:58.065+01:00"}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T23:17:58,065Z"}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22t23:17:58.065z"}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T23:17:58.0650000001Z"}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T23:17:58.Z"}`,
		`{"resource":"p","token":1,"expires_at":"2016-12-31T23:59:60Z"}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T24:00:00Z"}`,
		`{"resource":"p","token":1,"expires_at":"2026-02-30T23:17:58Z"}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T23:17:58+24:00"}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T23:17:58\u002e065Z"}`,
		`{"resource":"p","token":1,"expires_at":null}`,
		`{"resource":"p","token":1,"expires_at":"2026-11-22T23:17:58-00:00"}`,
	} {
		checkDecode(t, []byte(in))
	}
}

func FuzzDecode(f *testing.F) {
	for _, v := range values() {
		if b, err := json.Marshal(v); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b) })
}
