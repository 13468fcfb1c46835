package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/scsync/scsync/local-server/internal/importdir"
	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/shared/editing"
)

// queuedFiles records what the API queued (the transfer worker itself is
// tested against MinIO in its package).
type queuedFiles struct {
	Files
	queued []string
}

func (q *queuedFiles) EnqueueUpload(_ context.Context, u transfer.Upload) (transfer.Transfer, error) {
	q.queued = append(q.queued, u.Path)
	return transfer.Transfer{Path: u.Path, SHA256: u.SHA256, Size: u.Size}, nil
}

// TestImportFileLane: POST /v1/files reads only files inside the import
// directories; /etc/shadow, a missing file and a link pointing outside get
// the very same answer, so the API tells nothing about the disk.
func TestImportFileLane(t *testing.T) {
	st, m, _, _ := setup(t, editing.Config{})
	root := t.TempDir()
	imports := filepath.Join(root, "import")
	if err := os.Mkdir(imports, 0o700); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(imports, "scan.dcm")
	if err := os.WriteFile(good, []byte("pixels"), 0o600); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(root, "config.yaml")
	if err := os.WriteFile(outside, []byte("token: x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(imports, "link.dcm")); err != nil {
		t.Fatal(err)
	}
	dirs, err := importdir.New([]string{imports})
	if err != nil {
		t.Fatal(err)
	}
	q := &queuedFiles{}
	mux := http.NewServeMux()
	New(st, m, func() {}, slog.New(slog.DiscardHandler)).WithFiles(q, dirs).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func(path string) (int, string) {
		b, _ := json.Marshal(map[string]string{"path": path})
		resp, err := http.Post(srv.URL+"/v1/files", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	_, refusedBody := post("/etc/shadow")
	for _, p := range []string{"/etc/shadow", "/etc/passwd", "/nonexistent/file", outside,
		filepath.Join(imports, "link.dcm"), filepath.Join(imports, "missing.dcm"), "scan.dcm"} {
		code, body := post(p)
		if code != http.StatusForbidden || body != refusedBody {
			t.Errorf("POST /v1/files %q = %d %s, want 403 %s", p, code, body, refusedBody)
		}
	}
	var e struct{ Code string }
	if err := json.Unmarshal([]byte(refusedBody), &e); err != nil || e.Code != CodeImportRefused {
		t.Errorf("refusal body = %s, want code %s", refusedBody, CodeImportRefused)
	}
	if code, body := post(good); code != http.StatusAccepted {
		t.Fatalf("POST /v1/files %q = %d %s, want 202", good, code, body)
	}
	if len(q.queued) != 1 || q.queued[0] != good {
		t.Errorf("queued = %v, want [%s]", q.queued, good)
	}
}
