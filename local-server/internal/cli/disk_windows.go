//go:build windows

package cli

import "errors"

// freeBytes is not measured on Windows yet.
func freeBytes(string) (uint64, error) {
	return 0, errors.New("not measured on Windows")
}
