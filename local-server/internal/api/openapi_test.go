package api

import (
	"slices"
	"testing"

	"github.com/scsync/scsync/shared/openapi"
)

// TestOpenAPIDocumentIsValid checks the embedded description's structure
// (OpenAPI 3.1, declared path parameters, resolving references) and that
// every public route is marked public in it.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	if err := openapi.Check(OpenAPI()); err != nil {
		t.Fatal(err)
	}
	ops, err := openapi.Operations(OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	for p := range Policy() {
		if !slices.Contains(ops, p) {
			t.Errorf("policy route %q is not described", p)
		}
	}
	for _, op := range ops {
		if _, ok := Policy()[op]; !ok {
			t.Errorf("described operation %q has no rule in Policy", op)
		}
	}
}
