package backup

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"filippo.io/age"
)

// TestSealOpen: a sealed snapshot is age ciphertext (neither SQLite nor
// gzip), opens with the recovery key or with an extra recipient's identity
// (IT's offline key), and refuses a wrong key and a changed byte.
func TestSealOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	idFile := filepath.Join(dir, "data", "backup-identity.txt")
	it, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keys, created, err := LoadKeys(idFile, []string{it.Recipient().String()})
	if err != nil || !created {
		t.Fatalf("LoadKeys = %v, created %v; want a new recovery key", err, created)
	}
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(idFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("recovery key mode = %v, %v; want 0600", fi.Mode().Perm(), err)
		}
	}
	if _, created, err := LoadKeys(idFile, nil); err != nil || created {
		t.Fatalf("LoadKeys again = %v, created %v; want the same key read back", err, created)
	}
	plain := append([]byte("SQLite format 3\x00"), bytes.Repeat([]byte("patient Ada Lovelace "), 5000)...)
	src := filepath.Join(dir, "snap.db")
	if err := os.WriteFile(src, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	sealed := filepath.Join(dir, "snap.db.gz.age")
	b := &Backuper{keys: keys}
	if _, _, err := b.seal(src, sealed); err != nil {
		t.Fatal(err)
	}
	ct, err := os.ReadFile(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(ct, []byte("age-encryption.org/v1\n")) || bytes.Contains(ct, []byte("SQLite format 3")) ||
		bytes.Contains(ct, []byte("Lovelace")) || bytes.HasPrefix(ct, []byte{0x1f, 0x8b}) {
		t.Fatalf("sealed backup starts %q: want age ciphertext only", ct[:min(len(ct), 32)])
	}
	itFile := filepath.Join(dir, "it-key.txt")
	if err := os.WriteFile(itFile, []byte(it.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{idFile, itFile} {
		out := filepath.Join(dir, "restored-"+filepath.Base(id))
		if err := open(sealed, out, id); err != nil {
			t.Fatalf("open with %s: %v", filepath.Base(id), err)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, plain) {
			t.Fatalf("open with %s: %d bytes differ from the snapshot", filepath.Base(id), len(got))
		}
	}
	other := filepath.Join(dir, "other.txt")
	if err := GenerateIdentity(other); err != nil {
		t.Fatal(err)
	}
	if err := open(sealed, filepath.Join(dir, "x"), other); err == nil {
		t.Error("open with another clinic's key = nil, want an error")
	}
	if err := open(sealed, filepath.Join(dir, "x"), filepath.Join(dir, "missing.txt")); err == nil || !strings.Contains(err.Error(), "recovery key") {
		t.Errorf("open without a key = %v, want ErrNoIdentity", err)
	}
	tampered := bytes.Clone(ct)
	tampered[len(tampered)-100] ^= 1
	bad := filepath.Join(dir, "tampered.age")
	if err := os.WriteFile(bad, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := open(bad, filepath.Join(dir, "y"), idFile); err == nil {
		t.Error("open of a changed backup = nil, want an authentication error")
	}
	// And what it holds is gzip of the snapshot (compressed before encrypted).
	f, _ := os.Open(sealed)
	defer func() { _ = f.Close() }()
	r, err := decrypter(f, idFile)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatalf("decrypted backup is not gzip: %v", err)
	}
	if n, _ := io.Copy(io.Discard, zr); n != int64(len(plain)) {
		t.Errorf("gunzipped %d bytes, want %d", n, len(plain))
	}
}
