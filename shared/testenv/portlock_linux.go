//go:build linux

package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

var (
	portFileOnce sync.Once
	portFile     *os.File // kept open: closing it would drop every lock
)

// portLockPath is the file whose byte N stands for loopback port N.
func portLockPath() string {
	return filepath.Join(os.TempDir(), "scsync-testenv-ports.lock")
}

// reservePortAcross takes a write lock on byte port of the shared lock
// file, without waiting. When the file cannot be opened, nothing is
// reserved across processes (true): the listen check still stands.
func reservePortAcross(port int) bool {
	portFileOnce.Do(func() {
		f, err := os.OpenFile(portLockPath(), os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			return
		}
		// Another user's test run on the machine must be able to lock it too.
		_ = f.Chmod(0o666)
		portFile = f
	})
	if portFile == nil {
		return true
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: int64(port), Len: 1}
	err := syscall.FcntlFlock(portFile.Fd(), syscall.F_SETLK, &lk)
	if err == nil {
		return true
	}
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) {
		return false // another process holds it
	}
	return true // locking unsupported here (a file system without locks)
}
