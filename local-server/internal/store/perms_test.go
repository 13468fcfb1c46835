//go:build unix

package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// TestDataFilesPrivate: the database, its WAL and shared memory are 0600 and
// its directory 0700 (patient data, for the service account only), also
// when a database made by an older release was wider.
func TestDataFilesPrivate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "scsync.db")
	gen, err := ids.NewGenerator(5, ids.GeneratorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("mode of %s = %v, %v; want 0700", dir, fi.Mode().Perm(), err)
		}
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("stat %s: %v", p, err)
				continue
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("mode of %s = %v, want 0600", filepath.Base(p), fi.Mode().Perm())
			}
		}
	}
	s, err := Open(path, clinic, gen)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(context.Background(), Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Ada"}}); err != nil {
		t.Fatal(err)
	}
	check()
	_ = s.Close()
	// An older release left the files readable by others.
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		_ = os.Chmod(p, 0o644)
	}
	s, err = Open(path, clinic, gen)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Save(context.Background(), Edit{Kind: wire.KindPatient, Content: records.Patient{Name: "Bo"}}); err != nil {
		t.Fatal(err)
	}
	check()
}
