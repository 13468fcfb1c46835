//go:build !windows

package datadir

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// GiveToOwner hands every file under dir to dir's owner when this process
// runs as root and dir belongs to someone else: `sc-local restore` run with
// sudo must leave a database the service user (scsync) can open. Otherwise it
// does nothing. It returns how many entries it changed.
func GiveToOwner(dir string) (int, error) {
	if os.Geteuid() != 0 {
		return 0, nil
	}
	uid, gid, ok := owner(dir)
	if !ok || uid == 0 {
		return 0, nil
	}
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		u, g, ok := owner(p)
		if !ok || (u == uid && g == gid) {
			return nil
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
		n++
		return nil
	})
	return n, err
}

// MatchOwner gives path the owner and group of ref when this process runs as
// root (a no-op otherwise, and where ref cannot be read).
func MatchOwner(path, ref string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid, ok := owner(ref)
	if !ok {
		return nil
	}
	return os.Lchown(path, uid, gid)
}

func owner(p string) (uid, gid int, ok bool) {
	fi, err := os.Lstat(p)
	if err != nil {
		return 0, 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}
