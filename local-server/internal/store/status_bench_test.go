package store

import (
	"context"
	"os"
	"testing"
	"time"
)

// BenchmarkStatus is Status (the /v1/status answer and the metrics'
// gauges) on an existing sc-local database of the test clinic named by
// SCSYNC_STATUS_DB (opening it migrates it; the time is logged), or on
// 20,000 imported studies without it.
func BenchmarkStatus(b *testing.B) {
	ctx := context.Background()
	var s *Store
	if path := os.Getenv("SCSYNC_STATUS_DB"); path != "" {
		t0 := time.Now()
		s = openExisting(b, path, clinic)
		b.Logf("opened (and migrated) %s in %v", path, time.Since(t0))
	} else {
		s = open(b)
		seedStudies(b, s, 20_000)
	}
	var st Status
	for b.Loop() {
		var err error
		if st, err = s.Status(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(st.Pending+st.Synced+st.Conflict+st.Excluded), "records")
}
