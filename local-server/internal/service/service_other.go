//go:build !windows

package service

import "context"

// Do carries out o. Only Windows has a service manager to talk to.
func Do(context.Context, Options, Runner) error { return ErrNotWindows }

// IsWindowsService is false off Windows.
func IsWindowsService() bool { return false }
