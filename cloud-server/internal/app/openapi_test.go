package app

import (
	"net/http"
	"slices"
	"testing"

	"github.com/scsync/scsync/cloud-server/internal/api"
	"github.com/scsync/scsync/shared/openapi"
)

// TestOpenAPIDescribesEveryRoute compares the routes the running server's
// mux really registered (profiler included) with the operations of the
// OpenAPI description: a route without a description, or a description
// without a route, fails. The description is served anonymously at
// /openapi.json and passes the structural check.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	t.Setenv("SCSYNC_PPROF", "1")
	srv := startCloud(t, nil)
	routes := srv.guard.Mux().Patterns()
	if len(routes) < 30 || !slices.Contains(routes, "GET "+openapi.Path) {
		t.Fatalf("router has %d routes (%v), want the whole API with %s", len(routes), routes, openapi.Path)
	}
	got := do(t, http.MethodGet, srv.base+openapi.Path, "", nil)
	if got.status != http.StatusOK {
		t.Fatalf("GET %s without credentials = %d %s", openapi.Path, got.status, got.body)
	}
	if err := openapi.Check(got.body); err != nil {
		t.Fatalf("served description is not valid: %v", err)
	}
	ops, err := openapi.Operations(got.body)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if !slices.Contains(ops, r) {
			t.Errorf("route %q is not described in internal/api/openapi.json", r)
		}
	}
	for _, op := range ops {
		if !slices.Contains(routes, op) {
			t.Errorf("operation %q is described but no such route is registered", op)
		}
	}
	if !slices.Equal(got.body, api.OpenAPI()) {
		t.Error("served description differs from the embedded one")
	}
}
