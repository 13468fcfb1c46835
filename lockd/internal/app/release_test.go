package app

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/buildinfo"
)

// TestReleaseIdentity: lockd names its release and commit in /readyz and
// as scsync_build_info{version,commit,goversion} on /metrics.
func TestReleaseIdentity(t *testing.T) {
	t.Parallel()
	base, _ := startShared(t, nil)
	want := buildinfo.Read().Release()
	if _, r := readyz(t, base); r.Build != want || r.Build.Version == "" {
		t.Errorf("/readyz build = %+v, want %+v", r.Build, want)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	line := `scsync_build_info{commit="` + want.Commit + `",goversion="` + want.Go + `",version="` + want.Version + `"} 1`
	if !strings.Contains(string(b), line) {
		t.Errorf("/metrics lacks %s", line)
	}
}
