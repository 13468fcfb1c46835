package stack

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// busy starts a shell that spins until killed, its command line ending
// in token.
func busy(t *testing.T, token string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "while :; do :; done", token)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a busy shell: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// cpuOf waits until pid has used at least d of CPU and returns it.
func cpuOf(t *testing.T, pid int, d time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		u, err := ReadUsage(pid)
		if err != nil {
			t.Fatalf("ReadUsage(%d) = %v", pid, err)
		}
		if u.CPU >= d {
			return u.CPU
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d used %s of CPU in 10 s, want %s", pid, u.CPU, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopped stops cmd's process, waits until it is stopped (SIGSTOP is
// delivered after kill returns: it may run on another core meanwhile) and
// returns its CPU then.
func stopped(t *testing.T, cmd *exec.Cmd) time.Duration {
	t.Helper()
	pid := cmd.Process.Pid
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("stop process %d: %v", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			t.Fatal(err)
		}
		// The state follows the command's name in parentheses.
		if _, rest, ok := strings.Cut(string(stat), ") "); ok && (strings.HasPrefix(rest, "T") || strings.HasPrefix(rest, "t")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped after 10 s", pid)
		}
		time.Sleep(time.Millisecond)
	}
	u, err := ReadUsage(pid)
	if err != nil {
		t.Fatal(err)
	}
	return u.CPU
}

// A CPUWatch counts a process running at its start from its CPU then, one
// started since from zero, keeps the CPU of one that ended up to its last
// sample, and ignores processes that do not match.
func TestCPUWatch(t *testing.T) {
	token := "cpuwatch-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	w := newCPUWatch(func(cmd string) bool { return strings.HasSuffix(cmd, " "+token) })
	other := busy(t, token+"-not")
	before := busy(t, token)
	cpuOf(t, before.Process.Pid, 100*time.Millisecond)
	// Stopped while the watch starts, so that the CPU read here is the
	// CPU the watch starts from (a loaded machine runs it between the two).
	atStart := stopped(t, before)
	w.sample(true)
	_ = before.Process.Signal(syscall.SIGCONT)
	after := busy(t, token)
	cpuOf(t, after.Process.Pid, 100*time.Millisecond)
	cpuOf(t, before.Process.Pid, atStart+100*time.Millisecond)
	w.sample(false)
	if _, ok := w.procs[other.Process.Pid]; ok {
		t.Fatalf("the watch counts %q, want only command lines ending in %q", other.Args, token)
	}
	if len(w.procs) != 2 {
		t.Fatalf("the watch sees %d processes, want 2", len(w.procs))
	}
	// The one started since ends: what it used up to the sample stays.
	_ = after.Process.Kill()
	_ = after.Wait()
	afterCPU := w.procs[after.Process.Pid].last
	w.sample(false)
	if _, ok := w.procs[after.Process.Pid]; ok {
		t.Fatalf("the watch still holds process %d after it ended", after.Process.Pid)
	}
	end := stopped(t, before)
	w.sample(false)
	got, want := w.close(), afterCPU+end-atStart
	if got != want {
		t.Errorf("CPUWatch counted %s, want %s (%s of the process that ended, %s-%s of the one running at the start)", got, want, afterCPU, end, atStart)
	}
}

// BenchmarkCPUWatchSample is one sample of the three watches the
// replication benchmark runs, every 100 ms.
func BenchmarkCPUWatchSample(b *testing.B) {
	ws := []*CPUWatch{newCPUWatch(PostgresBackends("postgres")), newCPUWatch(PostgresServer), newCPUWatch(RabbitBroker)}
	for _, w := range ws {
		w.sample(true)
		defer w.close()
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, w := range ws {
			w.sample(false)
		}
	}
}
