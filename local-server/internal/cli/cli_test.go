package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
)

func TestWatchPrintsEachChangeOnce(t *testing.T) {
	seen := onceFilter(4)
	v1 := version.V{A: 1}
	changed := events.Event{Type: events.TypeChanged, Kind: "patient", Record: ids.ID(7), Version: v1}
	for i, tt := range []struct {
		e    events.Event
		want bool
	}{
		{changed, true},
		{changed, false}, // the same save announced by the cloud and by the acceptance
		{events.Event{Type: events.TypeChanged, Kind: "patient", Record: ids.ID(7), Version: version.V{A: 2}}, true},
		{events.Event{Type: events.TypeEditing, Kind: "patient", Record: ids.ID(7)}, true},
		{events.Event{Type: events.TypeEditing, Kind: "patient", Record: ids.ID(7)}, true}, // not change events: always shown
		{events.Event{Type: events.TypeChanged, Kind: "patient", Record: ids.ID(8), Version: v1}, true},
		{events.Event{Type: events.TypeChanged, Kind: "patient", Record: ids.ID(9), Version: v1}, true},
		{events.Event{Type: events.TypeChanged, Kind: "patient", Record: ids.ID(10), Version: v1}, true},
		{events.Event{Type: events.TypeChanged, Kind: "patient", Record: ids.ID(11), Version: v1}, true},
		{changed, true}, // forgotten after 4 others: a later event of the same version is shown again
	} {
		if got := seen(tt.e); got != tt.want {
			t.Errorf("event %d (%s %d v%s): shown = %v, want %v", i, tt.e.Type, tt.e.Record, tt.e.Version, got, tt.want)
		}
	}
}

func TestBackfillWatchTotalsDoNotJump(t *testing.T) {
	// The server's remaining count is refreshed every 30 s: between counts it
	// may under- or over-state. The watch's total never shrinks; it grows
	// when an import adds work.
	steps := []backfillProgress{
		{Measured: true, Remaining: 1000, Queued: 500},
		{Measured: true, Remaining: 900, Queued: 600},
		{Measured: true, Remaining: 950, Queued: 700}, // recounted: more than expected
		{Measured: true, Remaining: 0, Queued: 800},   // stale count
		{Measured: true, Remaining: 8000, Queued: 900, InFlight: 100},
	}
	var mu sync.Mutex
	i := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(steps[min(i, len(steps)-1)])
		i++
		if i == len(steps) {
			cancel()
		}
	}))
	defer srv.Close()
	var out bytes.Buffer
	if err := BackfillWatch(ctx, &out, srv.URL, time.Millisecond); err != nil {
		t.Fatalf("BackfillWatch = %v", err)
	}
	re := regexp.MustCompile(`(\d+) of (\d+) sent`)
	var totals []int
	for _, l := range strings.Split(out.String(), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[2])
			totals = append(totals, n)
		}
	}
	if len(totals) < len(steps)-1 {
		t.Fatalf("BackfillWatch printed %d progress lines, want ≥ %d:\n%s", len(totals), len(steps)-1, out.String())
	}
	for k := 1; k < len(totals); k++ {
		if totals[k] < totals[k-1] {
			t.Errorf("total went from %d to %d:\n%s", totals[k-1], totals[k], out.String())
		}
	}
	if !strings.Contains(out.String(), "nothing left at the last count") {
		t.Errorf("a zero count is not said as of the last count:\n%s", out.String())
	}
}

func TestBackfillState(t *testing.T) {
	for _, tt := range []struct {
		p    backfillProgress
		want string
	}{
		{backfillProgress{}, "counting"},
		{backfillProgress{Measured: true}, "nothing left at the last count"},
		{backfillProgress{Measured: true, Remaining: 5, InFlight: 5}, "waiting for the cloud to confirm 5"},
		{backfillProgress{Measured: true, Remaining: 50, Waiting: true}, "paused"},
		{backfillProgress{Measured: true, Remaining: 50}, "sending"},
	} {
		if got := backfillState(tt.p); !strings.Contains(got, tt.want) {
			t.Errorf("backfillState(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}
