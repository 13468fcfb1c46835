package testenv

import (
	"context"
	"net"
	"strconv"
	"testing"
)

// The ports handed to private servers lie below the kernel's ephemeral
// range, where no outgoing connection takes one while its server is down
// for a restart, and each is free to listen on.
func TestFreeAddrOutsideEphemeralPorts(t *testing.T) {
	lo, hi := fixedPortRange()
	if hi <= lo {
		t.Skip("no ip_local_port_range to stay below on this system")
	}
	seen := map[string]bool{}
	for range 20 {
		addr := FreeAddr(t)
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, err := strconv.Atoi(p)
		if err != nil {
			t.Fatal(err)
		}
		if port < lo || port > hi {
			t.Fatalf("FreeAddr gave %s, outside %d–%d (the ephemeral range starts at %d)", addr, lo, hi, hi+1)
		}
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr gave %s, which is taken: %v", addr, err)
		}
		_ = ln.Close()
		seen[addr] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 calls gave the same address %v", seen)
	}
}
