package datadir

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestSecondLockRefused(t *testing.T) {
	dir := t.TempDir()
	first, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire(%s) = %v", dir, err)
	}
	_, err = Acquire(dir)
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("second Acquire = %v, want LockedError naming pid %d", err, os.Getpid())
	}
	if msg := err.Error(); !strings.Contains(msg, dir) || !strings.Contains(msg, "in use") {
		t.Errorf("error %q does not name the directory and say it is in use", msg)
	}
	if err := first.Release(); err != nil {
		t.Fatalf("Release = %v", err)
	}
	again, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Release = %v", err)
	}
	_ = again.Release()
}

func TestAcquireCreatesDir(t *testing.T) {
	dir := t.TempDir() + "/a/b"
	l, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire(%s) = %v", dir, err)
	}
	defer func() { _ = l.Release() }()
	if _, err := os.Stat(dir + "/" + LockName); err != nil {
		t.Errorf("lock file: %v", err)
	}
}

// TestLockAcrossProcesses holds the lock in a child process (this test
// binary re-run), checks that this process is refused, then kills the child
// without letting it clean up: the OS releases the lock, a stale file does
// not block the next start.
func TestLockAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("DATADIR_TEST_HOLD"); dir != "" {
		if _, err := Acquire(dir); err != nil {
			_, _ = os.Stdout.WriteString("error " + err.Error() + "\n")
			os.Exit(1)
		}
		_, _ = os.Stdout.WriteString("held\n")
		select {} // until killed
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockAcrossProcesses$") //nolint:gosec // this test binary
	cmd.Env = append(os.Environ(), "DATADIR_TEST_HOLD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "held\n" {
		_ = cmd.Process.Kill()
		t.Fatalf("child: %q, %v", line, err)
	}
	_, err = Acquire(dir)
	var le *LockedError
	if !errors.As(err, &le) || le.PID != cmd.Process.Pid {
		t.Errorf("Acquire while the child holds it = %v, want LockedError with pid %d", err, cmd.Process.Pid)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after the holder died = %v", err)
	}
	_ = l.Release()
}
