package cli

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/local-server/internal/datadir"
)

func TestWriteYAMLKeepsMode(t *testing.T) {
	// The Debian package ships the config 0640 (root:scsync); enroll must not
	// make it 0600 and unreadable for the service.
	for _, mode := range []os.FileMode{0o640, 0o600} {
		path := filepath.Join(t.TempDir(), "sc-local.yaml")
		if err := os.WriteFile(path, []byte("log:\n  level: info\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // umask
			t.Fatal(err)
		}
		doc, err := readYAML(path)
		if err != nil {
			t.Fatal(err)
		}
		set(doc, []string{"clinic", "id"}, "42")
		if err := writeYAML(path, doc); err != nil {
			t.Fatalf("writeYAML = %v", err)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("mode after writeYAML = %v, %v, want %v", fi.Mode().Perm(), err, mode)
		}
		if got := lookup(mustRead(t, path), "clinic", "id"); got != "42" {
			t.Errorf("clinic.id = %q, want 42", got)
		}
	}
	// A new file is private.
	path := filepath.Join(t.TempDir(), "new.yaml")
	doc, _ := readYAML(path)
	if err := writeYAML(path, doc); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("new config mode = %v, want 0600", fi.Mode().Perm())
	}
}

func mustRead(t *testing.T, path string) *yaml.Node {
	t.Helper()
	doc, err := readYAML(path)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestRestoreRefusedWhileServerRuns(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Clinic.ID, cfg.Cloud.URL, cfg.Cloud.Token = 1, "http://127.0.0.1:1", "x"
	l, err := datadir.Acquire(cfg.DataDir) // the running server
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Release() }()
	err = Restore(context.Background(), io.Discard, cfg, "", false)
	if !errors.Is(err, datadir.ErrLocked) {
		t.Fatalf("Restore while the data directory is held = %v, want ErrLocked", err)
	}
}
