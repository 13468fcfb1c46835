//go:build unix

package testenv

import (
	"os/exec"
	"syscall"
)

// ownGroup makes cmd start in a process group of its own, so killGroup
// takes the program and every helper it started.
func ownGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// killGroup kills the process group of cmd, started with ownGroup.
func killGroup(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
