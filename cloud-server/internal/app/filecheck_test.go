package app

import (
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
)

// TestFileCheckRoute: sc-cloud mounts POST …/files/check behind the
// clinic's machine token like the other file routes: the clinic's own id
// answers (a file it does not have is an entry with code not_found), another
// clinic's id is a 404.
func TestFileCheckRoute(t *testing.T) {
	srv := startCloud(t, nil)
	a, b := newClinic(t, srv.base, "Check A"), newClinic(t, srv.base, "Check B")
	sha := strings.Repeat("ab", 32)
	req := filekey.CheckRequest{SHA256: []string{sha}}
	got := do(t, "POST", srv.base+filekey.Path(filekey.PathCheck, a.ID, ""), a.Token, req)
	var resp filekey.CheckResponse
	if got.status != 200 {
		t.Fatalf("POST check as the clinic = %d %s, want 200", got.status, got.body)
	}
	got.decode(t, &resp)
	if len(resp.Files) != 1 || resp.Files[0].SHA256 != sha || resp.Files[0].File != nil || resp.Files[0].Code != httpapi.CodeNotFound {
		t.Errorf("POST check of an unknown file = %s, want one not_found entry", got.body)
	}
	if got := do(t, "POST", srv.base+filekey.Path(filekey.PathCheck, b.ID, ""), a.Token, req); got.status != 404 {
		t.Errorf("POST check of another clinic's id = %d %s, want 404", got.status, got.body)
	}
}
