package httpapi

import (
	"bytes"
	"encoding/json"
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
func DecodeSave(w http.ResponseWriter, r *http.Request, spec records.Spec) (SaveRequest, records.Content, error) {
	var req SaveRequest
	if err := Decode(w, r, &req); err != nil {
		return req, nil, err
	}
	if len(req.Data) == 0 {
		return req, nil, Errorf(http.StatusBadRequest, CodeInvalidRecord, "data is required")
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
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, CodeBadRequest, "base_version must be A.B")
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
