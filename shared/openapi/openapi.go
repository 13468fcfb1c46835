// Package openapi serves a server's OpenAPI 3.1 description and checks it
// against the routes the server really registers.
//
// The documents are hand-written JSON embedded in each server's api
// package. Check is a structural check of the parts scsync relies on
// (version, operations, path parameters, references, security schemes,
// the error schema), not a full OpenAPI validator: it keeps the
// dependency list short, and the route test beside it catches the drift
// that matters (a route without a description or the other way round).
package openapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// Path is where each server serves its description.
const Path = "/openapi.json"

// Handler serves doc as application/json.
func Handler(doc []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(doc)
	})
}

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// Doc is the part of an OpenAPI 3.1 document that Check reads.
type Doc struct {
	OpenAPI    string                                `json:"openapi"`
	Info       map[string]any                        `json:"info"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas         map[string]json.RawMessage `json:"schemas"`
		Parameters      map[string]Parameter       `json:"parameters"`
		Responses       map[string]json.RawMessage `json:"responses"`
		SecuritySchemes map[string]struct {
			Type string `json:"type"`
		} `json:"securitySchemes"`
	} `json:"components"`
}

// Parameter is an operation parameter (inline or a $ref to components).
type Parameter struct {
	Ref      string `json:"$ref"`
	Name     string `json:"name"`
	In       string `json:"in"`
	Required bool   `json:"required"`
}

type operation struct {
	Summary     string                     `json:"summary"`
	OperationID string                     `json:"operationId"`
	Parameters  []Parameter                `json:"parameters"`
	Responses   map[string]json.RawMessage `json:"responses"`
	Security    []map[string][]string      `json:"security"`
}

// Operations lists the document's operations as Go 1.22 ServeMux
// patterns ("GET /v1/{collection}/{id}"), sorted.
func Operations(doc []byte) ([]string, error) {
	var d Doc
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	var out []string
	for p, item := range d.Paths {
		for m := range item {
			if slices.Contains(methods, m) {
				out = append(out, strings.ToUpper(m)+" "+p)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

var (
	pathParam = regexp.MustCompile(`\{([^{}]*)\}`)
	statusKey = regexp.MustCompile(`^([1-5][0-9][0-9]|[1-5]XX|default)$`)
)

// Check reports every structural problem of doc as one error: valid JSON,
// openapi 3.1.x, each operation with a summary, a unique operationId and
// responses, each path template parameter declared as a required path
// parameter (and no undeclared ones), every local $ref resolving, every
// security requirement naming a declared scheme, and an Error schema with
// code and message.
func Check(doc []byte) error {
	var d Doc
	dec := json.NewDecoder(bytes.NewReader(doc))
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("openapi: not JSON: %w", err)
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !strings.HasPrefix(d.OpenAPI, "3.1.") {
		bad("openapi = %q, want 3.1.x", d.OpenAPI)
	}
	if d.Info["title"] == nil || d.Info["version"] == nil {
		bad("info needs title and version")
	}
	if len(d.Paths) == 0 {
		bad("no paths")
	}
	var raw any
	if err := json.Unmarshal(doc, &raw); err != nil {
		return fmt.Errorf("openapi: %w", err)
	}
	walkRefs(raw, func(ref string) {
		if !resolves(raw, ref) {
			bad("$ref %q does not resolve", ref)
		}
	})
	ids := map[string]string{}
	for p, item := range d.Paths {
		if !strings.HasPrefix(p, "/") {
			bad("path %q does not start with /", p)
		}
		var want []string
		for _, m := range pathParam.FindAllStringSubmatch(p, -1) {
			want = append(want, m[1])
		}
		for m, rawOp := range item {
			if m == "parameters" || m == "summary" || m == "description" {
				continue
			}
			where := strings.ToUpper(m) + " " + p
			if !slices.Contains(methods, m) {
				bad("%s: unknown method", where)
				continue
			}
			var op operation
			if err := json.Unmarshal(rawOp, &op); err != nil {
				bad("%s: %v", where, err)
				continue
			}
			if op.Summary == "" {
				bad("%s: no summary", where)
			}
			if op.OperationID == "" {
				bad("%s: no operationId", where)
			} else if other, dup := ids[op.OperationID]; dup {
				bad("%s: operationId %q also used by %s", where, op.OperationID, other)
			} else {
				ids[op.OperationID] = where
			}
			if len(op.Responses) == 0 {
				bad("%s: no responses", where)
			}
			for code := range op.Responses {
				if !statusKey.MatchString(code) {
					bad("%s: response key %q", where, code)
				}
			}
			var got []string
			for _, prm := range op.Parameters {
				if prm.Ref != "" {
					name := strings.TrimPrefix(prm.Ref, "#/components/parameters/")
					c, ok := d.Components.Parameters[name]
					if !ok {
						bad("%s: parameter %q not in components", where, prm.Ref)
						continue
					}
					prm = c
				}
				if prm.In == "path" {
					if !prm.Required {
						bad("%s: path parameter %q must be required", where, prm.Name)
					}
					got = append(got, prm.Name)
				}
			}
			if !sameSet(got, want) {
				bad("%s: path parameters %v, template has %v", where, got, want)
			}
			for _, req := range op.Security {
				for s := range req {
					if _, ok := d.Components.SecuritySchemes[s]; !ok {
						bad("%s: security scheme %q not declared", where, s)
					}
				}
			}
		}
	}
	var e struct {
		Required []string `json:"required"`
	}
	if err := json.Unmarshal(d.Components.Schemas["Error"], &e); err != nil || !sameSet(e.Required, []string{"code", "message"}) {
		bad("components.schemas.Error must require code and message")
	}
	return errors.Join(errs...)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func walkRefs(v any, f func(string)) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if s, ok := x.(string); ok && k == "$ref" {
				f(s)
				continue
			}
			walkRefs(x, f)
		}
	case []any:
		for _, x := range t {
			walkRefs(x, f)
		}
	}
}

// resolves reports whether a local JSON pointer ref ("#/a/b") names a
// value of the document.
func resolves(root any, ref string) bool {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	cur := root
	for _, seg := range strings.Split(p, "/") {
		seg = strings.NewReplacer("~1", "/", "~0", "~").Replace(seg)
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[seg]; !ok {
			return false
		}
	}
	return true
}
