package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
)

// TestBackfillNewestFirst (M4, M8, in part): a clinic keeps five years of
// studies but syncs only this year's; widening the scope backfills the rest,
// and the cloud receives them newest first, even across a SIGKILL of
// sc-local in the middle.
func TestBackfillNewestFirst(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Andong Dental")
	s.startLocal(t, c, t.TempDir())
	cloud := cloudSide(s.cloud[0], c)
	if code := call(t, "PUT", c.base+"/v1/scope", "", map[string]string{"since": "2026-01-01"}, nil); code != 200 {
		t.Fatalf("set scope: %d", code)
	}
	var p patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Long History"}), &p); code != 201 {
		t.Fatalf("create patient: %d", code)
	}
	const n = 300
	for i := range n {
		date := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -i*6).Format(time.DateOnly) // back to 2021
		st := records.Study{StudyDate: date, Description: fmt.Sprintf("visit %d", i)}
		var r record
		if code := call(t, "POST", c.base+"/v1/studies", "", map[string]any{"data": map[string]any{
			"patient_id": p.ID, "study_date": st.StudyDate, "description": st.Description}}, &r); code != 201 {
			t.Fatalf("create study: %d", code)
		}
	}
	var st localStatus
	testenv.CheckFor(t, 60*time.Second, 250*time.Millisecond, func() error {
		call(t, "GET", c.base+"/v1/status", "", nil, &st)
		if st.Pending != 0 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	var stx struct{ Excluded int64 }
	call(t, "GET", c.base+"/v1/status", "", nil, &stx)
	if stx.Excluded < 200 {
		t.Fatalf("%d records excluded, want the studies before 2026", stx.Excluded)
	}

	if code := call(t, "PUT", c.base+"/v1/scope", "", map[string]any{}, nil); code != 200 {
		t.Fatalf("widen scope: %d", code)
	}
	testenv.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		var b struct{ Queued int64 }
		call(t, "GET", c.base+"/v1/backfill", "", nil, &b)
		if b.Queued == 0 {
			return fmt.Errorf("backfill has not started")
		}
		return nil
	})
	c.proc.kill9(t)
	c.proc.restart(t)
	waitReady(t, c.proc, c.base)
	converged(t, c, cloud, 2*time.Minute)
	// The relay forgets its last rows a moment after the cloud has them.
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		var b struct {
			Remaining int64 `json:"remaining"`
			InFlight  int64 `json:"in_flight"`
		}
		call(t, "GET", c.base+"/v1/backfill", "", nil, &b)
		if b.Remaining != 0 || b.InFlight != 0 {
			return fmt.Errorf("backfill remaining %d (%d in flight) after convergence", b.Remaining, b.InFlight)
		}
		return nil
	})

	// The cloud received the backfilled studies newest first.
	var feed struct {
		Changes []struct {
			Kind        string          `json:"kind"`
			BaseVersion string          `json:"base_version"`
			Payload     json.RawMessage `json:"payload"`
		} `json:"changes"`
	}
	call(t, "GET", cloud.prefix+"changes?limit=5000", c.Token, nil, &feed)
	last, backfilled := "9999", 0
	for _, ch := range feed.Changes {
		var sd struct {
			StudyDate string `json:"study_date"`
		}
		_ = json.Unmarshal(ch.Payload, &sd)
		if ch.Kind != "study" || sd.StudyDate >= "2026-01-01" {
			continue
		}
		backfilled++
		if sd.StudyDate > last {
			t.Errorf("the cloud received %s after %s: not newest first", sd.StudyDate, last)
		}
		last = sd.StudyDate
	}
	if backfilled != int(stx.Excluded) {
		t.Errorf("%d backfilled studies reached the cloud, want %d", backfilled, stx.Excluded)
	}
}
