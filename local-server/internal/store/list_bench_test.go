package store

import (
	"context"
	"os"
	"testing"

	"github.com/scsync/scsync/shared/wire"
)

// BenchmarkListExcluded is the studies list filtered by excluded: its
// first page of 100 (first) and every page (walk). SCSYNC_LIST_DB names an
// existing sc-local database (SCSYNC_LIST_CLINIC its clinic), e.g. a copy
// of BenchmarkVerifyScan's million studies with its states set by SQL;
// without it, 20,000 synced studies of which about 1 in 2,000 are set
// excluded (half of them queued once).
func BenchmarkListExcluded(b *testing.B) {
	ctx := context.Background()
	var s *Store
	if path := os.Getenv("SCSYNC_LIST_DB"); path != "" {
		s = openExisting(b, path, envClinic(b, "SCSYNC_LIST_CLINIC"))
	} else {
		s = open(b)
		seedStudies(b, s, 20_000)
		for _, q := range []string{
			"UPDATE studies SET sync_state = 'excluded', queued = 0 WHERE abs(random()) % 2000 = 0",
			"UPDATE studies SET queued = 1 WHERE sync_state = 'excluded' AND abs(random()) % 2 = 0",
		} {
			if err := s.db.Exec(q).Error; err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("first", func(b *testing.B) {
		var n int
		for b.Loop() {
			rs, err := s.List(ctx, wire.KindStudy, ListQuery{SyncState: StateExcluded, Limit: 100})
			if err != nil {
				b.Fatal(err)
			}
			n = len(rs)
		}
		b.ReportMetric(float64(n), "records")
	})
	b.Run("walk", func(b *testing.B) {
		var n, pages int
		for b.Loop() {
			n, pages = 0, 0
			q := ListQuery{SyncState: StateExcluded, Limit: 100}
			for {
				rs, err := s.List(ctx, wire.KindStudy, q)
				if err != nil {
					b.Fatal(err)
				}
				pages++
				if len(rs) == 0 {
					break
				}
				n += len(rs)
				q.After = RecordMeta(rs[len(rs)-1]).ID
			}
		}
		b.ReportMetric(float64(n), "records")
		b.ReportMetric(float64(pages), "pages")
	})
}
