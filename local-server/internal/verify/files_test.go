package verify

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/scsync/scsync/local-server/internal/transfer"
)

// TestClinicCopy: the clinic holds a file when a finished transfer's path
// exists with the record's size; a transfer under way makes it "on its
// way"; a missing or truncated file is no copy.
func TestClinicCopy(t *testing.T) {
	dir := t.TempDir()
	good, short := filepath.Join(dir, "good"), filepath.Join(dir, "short")
	if err := os.WriteFile(good, make([]byte, 10), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, make([]byte, 3), 0o600); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(dir, "gone")
	for _, c := range []struct {
		name     string
		ts       []transfer.Transfer
		want     string
		wantBusy bool
	}{
		{"present", []transfer.Transfer{{State: transfer.StatePresent, Path: good}}, good, false},
		{"gone", []transfer.Transfer{{State: transfer.StatePresent, Path: gone}}, "", false},
		{"truncated", []transfer.Transfer{{State: transfer.StatePresent, Path: short}}, "", false},
		{"gone source, downloaded copy", []transfer.Transfer{{State: transfer.StatePresent, Path: gone}, {State: transfer.StatePresent, Path: good}}, good, false},
		{"failed only", []transfer.Transfer{{State: transfer.StateFailed, Path: good}}, "", false},
		{"under way", []transfer.Transfer{{State: transfer.StateQueued, Path: gone}}, "", true},
	} {
		got, busy := clinicCopy(c.ts, 10)
		if got != c.want || busy != c.wantBusy {
			t.Errorf("%s: clinicCopy = %q, %v; want %q, %v", c.name, got, busy, c.want, c.wantBusy)
		}
	}
}
