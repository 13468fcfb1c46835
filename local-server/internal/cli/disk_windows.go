//go:build windows

package cli

import (
	"fmt"

	"golang.org/x/sys/windows"
)

// freeBytes is the space available to this user on dir's volume
// (GetDiskFreeSpaceEx honours per-user quotas).
func freeBytes(dir string) (uint64, error) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return 0, fmt.Errorf("disk free: %w", err)
	}
	var avail, total, free uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, &total, &free); err != nil {
		return 0, fmt.Errorf("disk free of %s: %w", dir, err)
	}
	return avail, nil
}
