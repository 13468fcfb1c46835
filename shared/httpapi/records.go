package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Page is a list response; Next is the cursor (the after parameter) for the
// following page, empty at the end.
type Page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// ListParams are the query parameters every record list takes.
type ListParams struct {
	Limit        int       // limit: 1..1000, default 100
	After        ids.ID    // after: id of the last record of the previous page
	UpdatedSince time.Time // updated_since: RFC 3339
	WithDeleted  bool      // deleted=true includes tombstones
	Parent       ids.ID    // parent: records of that parent (studies of a patient…)
}

// ParseList reads the list parameters of r for the records of spec.
func ParseList(r *http.Request, spec records.Spec) (ListParams, error) {
	p := ListParams{Limit: 100}
	v := r.URL.Query()
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return p, Errorf(http.StatusBadRequest, CodeBadRequest, "limit must be 1..1000")
		}
		p.Limit = n
	}
	var err error
	if s := v.Get("after"); s != "" {
		if p.After, err = ids.Parse(s); err != nil {
			return p, Errorf(http.StatusBadRequest, CodeBadRequest, "after must be an id")
		}
	}
	if s := v.Get("updated_since"); s != "" {
		if p.UpdatedSince, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return p, Errorf(http.StatusBadRequest, CodeBadRequest, "updated_since must be RFC 3339")
		}
	}
	if s := v.Get("parent"); s != "" {
		if spec.ParentField == "" {
			return p, Errorf(http.StatusBadRequest, CodeBadRequest, "%s have no parent", spec.Table)
		}
		if p.Parent, err = ids.Parse(s); err != nil {
			return p, Errorf(http.StatusBadRequest, CodeBadRequest, "parent must be an id")
		}
	}
	p.WithDeleted = v.Get("deleted") == "true"
	return p, nil
}

// Collection returns the kind whose collection the {collection} path value names.
func Collection(r *http.Request) (records.Spec, error) {
	spec, ok := records.SpecOfTable(r.PathValue("collection"))
	if !ok {
		return spec, Errorf(http.StatusNotFound, CodeNotFound, "no such collection %q", r.PathValue("collection"))
	}
	return spec, nil
}

// RecordID parses the {id} path value.
func RecordID(r *http.Request) (ids.ID, error) {
	id, err := ids.Parse(r.PathValue("id"))
	if err != nil {
		return 0, Errorf(http.StatusBadRequest, CodeBadRequest, "id must be a numeric id")
	}
	return id, nil
}

// SaveRequest is the body of a record create or update.
type SaveRequest struct {
	// Data is the record's content (see shared/records for each kind).
	Data json.RawMessage `json:"data"`
	// BaseVersion, when given, must be the record's current version
	// (optimistic check), otherwise 409 version_conflict.
	BaseVersion *version.V `json:"base_version,omitempty"`
}

// DecodeSave reads a SaveRequest for spec's kind and validates its content.
//
// A body that is exactly {"data":…} with an optional "base_version" (the
// common case) is read in one pass, its content decoded where it stands
// (decodeSaveOnce). Anything else — an error of any kind, a key spelt
// otherwise, a key twice — is read again the way it always was
// (decodeSaveTwice: the body, then its data), which decides what is
// accepted and with which error: the one pass takes only bodies that way
// takes too, with the same result (FuzzDecodeSaveOnce). Decoding the body
// twice cost about 3% of sc-local's CPU under a burst of creates
// (docs/performance.md).
func DecodeSave(w http.ResponseWriter, r *http.Request, spec records.Spec) (SaveRequest, records.Content, error) {
	mr := http.MaxBytesReader(w, r.Body, MaxBody)
	body, err := readBody(mr, r.ContentLength)
	if err == nil {
		if req, c, ok := decodeSaveFlat(body, spec); ok {
			return req, c, nil
		}
		if req, c, ok := decodeSaveOnce(body, spec); ok {
			return req, c, nil
		}
	}
	var rest io.Reader = bytes.NewReader(body)
	if err != nil {
		// What the reader said after these bytes (too large, a broken
		// connection), it says again at the same place.
		rest = io.MultiReader(rest, mr)
	}
	return decodeSaveTwice(rest, spec)
}

// readBody reads r to its end, sized by the request's Content-Length when
// it gives one within MaxBody. On an error it returns what it read before.
func readBody(r io.Reader, length int64) ([]byte, error) {
	size := int64(512)
	if length > 0 && length <= MaxBody {
		size = length + 1 // +1: the read that sees the end needs room
	}
	b := make([]byte, 0, size)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
	}
}

// decodeSaveFlat reads the commonest body, a create's {"data": {…}} whose
// content records.DecodeFlat takes (a patient's, say, with plain strings),
// without encoding/json; ok is false for anything else (base_version
// included), which decodeSaveOnce and decodeSaveTwice then judge.
func decodeSaveFlat(body []byte, spec records.Spec) (req SaveRequest, c records.Content, ok bool) {
	i := wire.SkipSpace(body, 0)
	if !bytes.HasPrefix(body[i:], []byte(`{"data"`)) {
		return req, nil, false
	}
	i = wire.SkipSpace(body, i+len(`{"data"`))
	if i >= len(body) || body[i] != ':' {
		return req, nil, false
	}
	i = wire.SkipSpace(body, i+1)
	c, n, ok := records.DecodeFlat(spec.Kind, body[i:])
	if !ok {
		return req, nil, false
	}
	req.Data = body[i : i+n]
	i = wire.SkipSpace(body, i+n)
	if i >= len(body) || body[i] != '}' || wire.SkipSpace(body, i+1) != len(body) {
		return SaveRequest{}, nil, false
	}
	return req, c, true
}

// decodeSaveOnce reads body in one pass when it is an object of exactly
// the keys "data" and, optionally, "base_version", each once, and is valid
// as a whole; ok is false for anything else, which decodeSaveTwice then
// judges. The content is decoded in place by the body's own (strict)
// decoder, so it is scanned once instead of three times (the body's value,
// its copy as Data, then Data again).
func decodeSaveOnce(body []byte, spec records.Spec) (req SaveRequest, c records.Content, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return req, nil, false
	}
	var seenData, seenBase bool
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return req, nil, false
		}
		switch key, _ := t.(string); key {
		case "data":
			if seenData {
				return req, nil, false
			}
			seenData = true
			start := dec.InputOffset()
			if c, err = records.DecodeNext(spec.Kind, dec); err != nil {
				return req, nil, false
			}
			// Data as decodeSaveTwice gives it: the value's bytes as
			// sent (after the colon and the blanks before it).
			req.Data = bytes.TrimLeft(body[start:dec.InputOffset()], " \t\r\n:")
		case "base_version":
			if seenBase {
				return req, nil, false
			}
			seenBase = true
			if err := dec.Decode(&req.BaseVersion); err != nil {
				return req, nil, false
			}
		default:
			return req, nil, false
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') || dec.More() || !seenData {
		return req, nil, false
	}
	if req.BaseVersion != nil && req.BaseVersion.IsZero() {
		return req, nil, false
	}
	return req, c, true
}

// decodeSaveTwice reads a SaveRequest from body, then its data as spec's
// content: the reference DecodeSave's one pass agrees with, and what
// gives every refusal its code and message.
func decodeSaveTwice(body io.Reader, spec records.Spec) (SaveRequest, records.Content, error) {
	var req SaveRequest
	if err := decodeFrom(body, &req); err != nil {
		return req, nil, err
	}
	if len(req.Data) == 0 {
		return req, nil, Errorf(http.StatusBadRequest, CodeInvalidRecord, "data is required")
	}
	if req.BaseVersion != nil && req.BaseVersion.IsZero() {
		return req, nil, Errorf(http.StatusBadRequest, CodeBadRequest, "base_version must be A.B (1.0 or later)")
	}
	c, err := records.Decode(spec.Kind, req.Data)
	if err != nil {
		return req, nil, Errorf(http.StatusBadRequest, CodeInvalidRecord, "%s", trimInvalid(err.Error()))
	}
	return req, c, nil
}

// BaseVersionParam reads the optional base_version query parameter (deletes).
func BaseVersionParam(r *http.Request) (*version.V, error) {
	b := r.URL.Query().Get("base_version")
	if b == "" {
		return nil, nil
	}
	v, err := version.Parse(b)
	if err != nil || v.IsZero() {
		return nil, Errorf(http.StatusBadRequest, CodeBadRequest, "base_version must be A.B (1.0 or later)")
	}
	return &v, nil
}

func trimInvalid(msg string) string {
	const p = "records: invalid: "
	if len(msg) > len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}

// ImportLine is one line of a bulk import (NDJSON): a record's kind and its
// content.
type ImportLine struct {
	Kind wire.Kind       `json:"kind"`
	Data json.RawMessage `json:"data"`
}

// DecodeImportLine reads and validates one NDJSON line of a bulk import.
// Unknown fields are errors, like every other request body.
func DecodeImportLine(line []byte) (wire.Kind, records.Content, error) {
	var l ImportLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return "", nil, Errorf(http.StatusBadRequest, CodeBadRequest, "not a JSON object with kind and data: %v", err)
	}
	if dec.More() {
		return "", nil, Errorf(http.StatusBadRequest, CodeBadRequest, "one JSON object per line")
	}
	if _, ok := records.SpecOf(l.Kind); !ok {
		return "", nil, Errorf(http.StatusBadRequest, CodeInvalidRecord, "unknown kind %q", l.Kind)
	}
	if len(l.Data) == 0 {
		return "", nil, Errorf(http.StatusBadRequest, CodeInvalidRecord, "data is required")
	}
	c, err := records.Decode(l.Kind, l.Data)
	if err != nil {
		return "", nil, Errorf(http.StatusBadRequest, CodeInvalidRecord, "%s", trimInvalid(err.Error()))
	}
	return l.Kind, c, nil
}
