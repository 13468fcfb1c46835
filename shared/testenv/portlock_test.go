package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// portProbeEnv makes child runs of this test binary act as a
// second test process: it names a port to try, and the child prints whether
// it could reserve it, then a port of its own.
const portProbeEnv = "SCSYNC_TESTENV_PORT_PROBE"

// TestPortReservedAcrossProcesses: a port freePortErr gave this process is
// given to no other test process while this one lives, nor again to this
// one; a port another process held is free again once that process ends.
func TestPortReservedAcrossProcesses(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ports are reserved across processes on Linux only")
	}
	if lo, hi := fixedPortRange(); hi <= lo {
		t.Skip("no fixed port range on this system")
	}
	port, err := freePortErr()
	if err != nil {
		t.Fatal(err)
	}
	if reservePort(port) {
		t.Fatalf("port %d reserved twice in one process", port)
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestPortProbeChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), portProbeEnv+"="+strconv.Itoa(port))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var verdict string
	var childPort int
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "probe: "); ok {
			verdict = v
		}
		if v, ok := strings.CutPrefix(l, "own: "); ok {
			childPort, _ = strconv.Atoi(v)
		}
	}
	if verdict != "taken" {
		t.Fatalf("a second process found port %d %q, want taken; its output:\n%s", port, verdict, out)
	}
	if childPort == 0 {
		t.Fatalf("the child named no port of its own; its output:\n%s", out)
	}
	if !reservePort(childPort) {
		t.Fatalf("port %d stayed reserved after the process holding it ended", childPort)
	}
}

// TestPortProbeChild is the second process of
// TestPortReservedAcrossProcesses; run alone it does nothing.
func TestPortProbeChild(t *testing.T) {
	v := os.Getenv(portProbeEnv)
	if v == "" {
		t.Skip("run by TestPortReservedAcrossProcesses only")
	}
	port, err := strconv.Atoi(v)
	if err != nil {
		t.Fatal(err)
	}
	verdict := "taken"
	if reservePortAcross(port) {
		verdict = "free"
	}
	own, err := freePortErr()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Printf("probe: %s\nown: %d\n", verdict, own); err != nil {
		t.Fatal(err)
	}
}
