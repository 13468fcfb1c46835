// Package importdir confines file imports to the directories the clinic's
// IT configured (files.import_dirs): a client of the clinic API names a file
// to upload, and only files inside those directories, after every symbolic
// link is resolved, may be read. Everything else is refused the same way,
// whether it exists or not, so the API is no oracle for the server's disk.
package importdir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrRefused is every refusal: outside the import directories, missing,
// not a regular file, or unreadable. Callers must not tell these apart to
// the client.
var ErrRefused = errors.New("importdir: path is not a readable file inside an import directory")

// Reason is why a path was refused, for the server's own log (never for the
// client: it would tell whether a path exists).
type Reason struct {
	Why string
}

func (r *Reason) Error() string { return "importdir: " + r.Why }

// Unwrap makes every reason match ErrRefused.
func (r *Reason) Unwrap() error { return ErrRefused }

// Dirs is the resolved set of import directories.
type Dirs struct {
	roots []string
}

// New resolves each directory (absolute, symbolic links evaluated); a
// directory that does not exist is an error, so a typo fails at start.
func New(dirs []string) (*Dirs, error) {
	d := &Dirs{}
	for _, dir := range dirs {
		if strings.TrimSpace(dir) == "" {
			continue
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("importdir: %s: %w", dir, err)
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, fmt.Errorf("importdir: %s: %w", dir, err)
		}
		st, err := os.Stat(real)
		if err != nil {
			return nil, fmt.Errorf("importdir: %s: %w", dir, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("importdir: %s is not a directory", dir)
		}
		d.roots = append(d.roots, real)
	}
	if len(d.roots) == 0 {
		return nil, errors.New("importdir: no import directory")
	}
	return d, nil
}

// Roots are the resolved directories.
func (d *Dirs) Roots() []string { return append([]string(nil), d.roots...) }

// Resolve returns the real path of a regular file inside an import
// directory, or an error matching ErrRefused. A path that lies outside
// every directory before resolution is refused without touching the disk;
// one inside is resolved (symbolic links followed) and must still be
// inside. The returned path has no symbolic links left, so reading it later
// cannot be redirected by a link planted in the request's path.
func (d *Dirs) Resolve(path string) (string, error) {
	if d == nil || !filepath.IsAbs(path) {
		return "", &Reason{Why: "not an absolute path"}
	}
	clean := filepath.Clean(path)
	if !d.inside(clean) {
		return "", &Reason{Why: "outside the import directories"}
	}
	real, err := filepath.EvalSymlinks(clean)
	if err != nil {
		return "", &Reason{Why: "cannot resolve"}
	}
	if !d.inside(real) {
		return "", &Reason{Why: "resolves outside the import directories"}
	}
	st, err := os.Stat(real)
	if err != nil || !st.Mode().IsRegular() {
		return "", &Reason{Why: "not a regular file"}
	}
	f, err := os.Open(real)
	if err != nil {
		return "", &Reason{Why: "not readable"}
	}
	_ = f.Close()
	return real, nil
}

func (d *Dirs) inside(p string) bool {
	for _, root := range d.roots {
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			continue
		}
		if rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel) {
			return true
		}
	}
	return false
}
