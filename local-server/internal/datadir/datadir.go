// Package datadir guards sc-local's data directory: one server per
// directory, held by an exclusive lock on a file inside it for as long as the
// process runs. Two servers on one directory would mint ids with the same
// Snowflake node id (duplicates) and write one SQLite file from two processes.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockName is the lock file inside the data directory.
const LockName = "sc-local.lock"

// ErrLocked is returned when another process holds the directory.
var ErrLocked = errors.New("datadir: in use by another sc-local")

// LockedError says which directory is taken and, when known, by which process.
type LockedError struct {
	Dir string
	PID int // 0 when the holder did not write its pid
}

func (e *LockedError) Error() string {
	who := "another sc-local"
	if e.PID > 0 {
		who = fmt.Sprintf("another sc-local (pid %d)", e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by %s; stop it first, or give this one its own data_dir", e.Dir, who)
}

// Unwrap lets errors.Is(err, ErrLocked) match.
func (e *LockedError) Unwrap() error { return ErrLocked }

// Lock is a held data directory.
type Lock struct {
	f *os.File
}

// Acquire creates dir if needed and takes its lock without waiting. The lock
// lasts until Release or the end of the process (the OS drops it even after a
// crash, so a stale file never blocks a restart).
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640) //nolint:gosec // path is the configured data dir
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	if err := lockFile(f); err != nil {
		pid := readPID(path)
		_ = f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, &LockedError{Dir: dir, PID: pid}
		}
		return nil, fmt.Errorf("data dir lock %s: %w", path, err)
	}
	// The pid is for people reading the error; the lock is what counts.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release drops the lock. It leaves the file: removing it would let a third
// process lock a new file while a second still waits on the old one.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unlockFile(l.f)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// readPID reads the holder's pid; 0 if unreadable.
func readPID(path string) int {
	b, err := os.ReadFile(path) //nolint:gosec // path is the configured data dir
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0
	}
	return n
}
