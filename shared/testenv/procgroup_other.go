//go:build !unix

package testenv

import "os/exec"

// ownGroup: private servers run on Unix only; elsewhere the command starts
// as it is.
func ownGroup(*exec.Cmd) {}

// killGroup kills cmd's own process (no process groups off Unix).
func killGroup(cmd *exec.Cmd) { _ = cmd.Process.Kill() }
