package store

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/antientropy"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
)

// TestVerifyScanAtScale measures the cloud's half of a verify run (the
// digest scan into the bucket sums) over N records of one clinic
// (SCSYNC_VERIFY_SCALE=N, e.g. 1000000): the rows are copied in PostgreSQL
// from one real record, so the set-up takes seconds, not a backfill. It is
// a measuring tool for docs/performance.md and runs only when asked.
func TestVerifyScanAtScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SCSYNC_VERIFY_SCALE"))
	if n <= 0 {
		t.Skip("set SCSYNC_VERIFY_SCALE=<records> to measure the cloud's verify scan")
	}
	s := open(t)
	ctx := context.Background()
	c := enroll(t, s, 91, "")
	// The benchmark's mix (bench/internal/suite/verify.go): 1% patients,
	// the rest studies of them.
	pat, study := ids.ID(1<<40), ids.ID(1<<41)
	applyUp(t, s, c.ID, change(c.ID, 910_000, pat, version.V{}, version.First, "Seed Patient"))
	applyUp(t, s, c.ID, changeOf(c.ID, 910_001, study, records.Study{PatientID: pat, StudyDate: "2026-01-01",
		Description: "Panoramic and bitewing series, follow-up", AccessionNo: "ACC-000001"}))
	start := time.Now()
	patients := max(n/100, 1)
	copyRows(t, s, "patients", c.ID, pat, patients-1)
	copyRows(t, s, "studies", c.ID, study, n-patients-1)
	t.Logf("copied %d rows in %s", n-2, time.Since(start).Round(time.Millisecond))
	for run := range 2 {
		var ms runtime.MemStats
		runtime.GC()
		start = time.Now()
		var set antientropy.Set
		if err := s.EachDigest(ctx, c.ID, func(key, digest string, _ Record) error { set.Add(key, digest); return nil }); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&ms)
		took := time.Since(start)
		if set.Count() != n {
			t.Fatalf("scan counted %d records, want %d", set.Count(), n)
		}
		t.Logf("run %d: %d records in %s (%.0f records/s); heap in use %0.1f MiB, sys %0.1f MiB", run, n, took.Round(time.Millisecond),
			float64(n)/took.Seconds(), float64(ms.HeapInuse)/(1<<20), float64(ms.Sys)/(1<<20))
	}
}

// copyRows adds n copies of one row of table, with the ids that follow it.
func copyRows(t *testing.T, s *Store, table string, clinic, id ids.ID, n int) {
	t.Helper()
	var cols []string
	if err := s.db.Raw("SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = current_schema() ORDER BY ordinal_position", table).
		Scan(&cols).Error; err != nil {
		t.Fatal(err)
	}
	from := make([]string, len(cols))
	for i, c := range cols {
		from[i] = "p." + c
		if c == "id" {
			from[i] = "p.id + g"
		}
	}
	err := s.db.Exec("INSERT INTO "+table+" ("+strings.Join(cols, ", ")+") SELECT "+strings.Join(from, ", ")+
		" FROM "+table+" p, generate_series(1, ?) g WHERE p.clinic_id = ? AND p.id = ?", n, clinic, id).Error
	if err == nil {
		err = s.db.Exec("ANALYZE " + table).Error
	}
	if err != nil {
		t.Fatal(err)
	}
}
