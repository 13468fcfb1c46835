package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Binaries are the built scsync programs.
type Binaries struct {
	Dir, Local, Cloud, Lockd string
}

// InDir names the binaries in dir (built before, e.g. by `make build`).
func InDir(dir string) Binaries {
	return Binaries{Dir: dir, Local: filepath.Join(dir, "sc-local"), Cloud: filepath.Join(dir, "sc-cloud"), Lockd: filepath.Join(dir, "lockd")}
}

// RepoRoot finds the repository (the directory holding go.work) from the
// working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("stack: go.work not found above the working directory; run from the repository")
		}
		dir = parent
	}
}

// Build builds sc-local, sc-cloud and lockd (no -race: these are the
// binaries a clinic runs) into dir.
func Build(ctx context.Context, dir string) (Binaries, error) {
	root, err := RepoRoot()
	if err != nil {
		return Binaries{}, err
	}
	b := InDir(dir)
	for _, t := range []struct{ mod, pkg, out string }{
		{"local-server", "./cmd/sc-local", b.Local},
		{"cloud-server", "./cmd/sc-cloud", b.Cloud},
		{"lockd", "./cmd/lockd", b.Lockd},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", t.out, t.pkg)
		cmd.Dir = filepath.Join(root, t.mod)
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("build %s: %w\n%s", t.pkg, err, out)
		}
	}
	return b, nil
}
