package importdir

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolve(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	imports := filepath.Join(root, "import")
	outside := filepath.Join(root, "outside")
	for _, d := range []string{imports, outside, filepath.Join(imports, "sub")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string) string {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := write(filepath.Join(imports, "sub", "scan.dcm"))
	secret := write(filepath.Join(outside, "secret"))
	link := filepath.Join(imports, "link")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	dirLink := filepath.Join(imports, "dirlink")
	if err := os.Symlink(outside, dirLink); err != nil {
		t.Fatal(err)
	}
	inLink := filepath.Join(imports, "inlink")
	if err := os.Symlink(ok, inLink); err != nil {
		t.Fatal(err)
	}
	d, err := New([]string{imports})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want string // "" refused
	}{
		{ok, ok},
		{inLink, ok}, // a link inside pointing inside: its target
		{"/etc/shadow", ""},
		{"/etc/passwd", ""},
		{"/proc/self/environ", ""},
		{secret, ""},
		{link, ""},                             // link inside, target outside
		{filepath.Join(dirLink, "secret"), ""}, // directory link inside, pointing outside
		{filepath.Join(imports, "..", "outside", "secret"), ""},
		{filepath.Join(imports, "nope"), ""}, // missing
		{filepath.Join(imports, "sub"), ""},  // a directory
		{imports, ""},                        // the root itself
		{"relative/scan.dcm", ""},
		{"", ""},
	} {
		got, err := d.Resolve(tc.path)
		if tc.want == "" {
			if !errors.Is(err, ErrRefused) {
				t.Errorf("Resolve(%q) = %q, %v, want ErrRefused", tc.path, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v, want %q", tc.path, got, err, tc.want)
		}
	}
}

func TestNewRefusesMissingDir(t *testing.T) {
	t.Parallel()
	if _, err := New([]string{filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("New(missing dir) = nil error, want one")
	}
	if _, err := New(nil); err == nil {
		t.Fatal("New(nil) = nil error, want one")
	}
}
