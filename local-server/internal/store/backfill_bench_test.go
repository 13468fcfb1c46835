package store

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// BenchmarkBackfillRoundTrip is the clinic's store work of a backfill, as
// the backfill benchmark's history makes it (1% patients, the rest
// studies over ten years in no order of date): the outbox's lanes counted
// and a batch of 1,000 queued, as the backfill loop does,
// the relay's reads and deletes of 500 at a time, and the cloud's
// acceptances applied 500 at a time (go test -bench BackfillRoundTrip
// -cpuprofile; records/s is the store's alone).
func BenchmarkBackfillRoundTrip(b *testing.B) {
	const n = 20_000
	ctx := context.Background()
	var total int
	for b.Loop() {
		b.StopTimer()
		s := open(b)
		seedHistory(b, s, n)
		b.StartTimer()
		seq := int64(0)
		for {
			// The backfill loop counts the outbox's lanes before each batch.
			if _, _, err := s.OutboxLanes(ctx); err != nil {
				b.Fatal(err)
			}
			bf, err := s.Backfill(ctx, 1000)
			if err != nil {
				b.Fatal(err)
			}
			if bf.Records == 0 {
				break
			}
			total += bf.Records
			for relayAndAccept(b, s, wire.MaxBatch, &seq) > 0 {
			}
		}
		b.StopTimer()
		_ = s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "records/s")
}

// seedHistory imports the backfill benchmark's history of n records: 1%
// patients, the rest studies over ten years in no order of date.
func seedHistory(b *testing.B, s *Store, n int) {
	b.Helper()
	ctx := context.Background()
	var pats []Import
	for i := range n / 100 {
		pats = append(pats, Import{Kind: wire.KindPatient, Content: records.Patient{Name: fmt.Sprintf("Patient %d", i)}})
	}
	pids, err := s.Import(ctx, pats)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n-len(pats); i += 20_000 {
		items := make([]Import, min(20_000, n-len(pats)-i))
		for j := range items {
			k := i + j
			date := fmt.Sprintf("20%02d-%02d-%02d", 16+(k*7919)%10, 1+(k*31)%12, 1+(k*17)%28)
			items[j] = Import{Kind: wire.KindStudy, Content: records.Study{PatientID: pids[k%len(pids)], StudyDate: date, Description: fmt.Sprintf("Study %d", k)}}
		}
		if _, err := s.Import(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackfillWAL is BenchmarkBackfillRoundTrip's work on
// SCSYNC_BACKFILL_N records (default 20,000) with the WAL never
// checkpointed, and reports the WAL frames it wrote per 1,000 records:
// with the sync_state indexes as migrated (partial) and with the full
// indexes of schema 00003 made again on patients and studies (full).
// SCSYNC_WAL_OWNERS=1 logs them by table and index (slow beyond 20,000).
func BenchmarkBackfillWAL(b *testing.B) {
	n, err := strconv.Atoi(cmp.Or(os.Getenv("SCSYNC_BACKFILL_N"), "20000"))
	if err != nil {
		b.Fatal(err)
	}
	for _, full := range []bool{false, true} {
		name := "partial"
		if full {
			name = "full"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				s := open(b)
				if full {
					for _, t := range []string{"patients", "studies"} {
						if err := s.db.Exec("DROP INDEX idx_" + t + "_sync_state").Error; err != nil {
							b.Fatal(err)
						}
						if err := s.db.Exec("CREATE INDEX idx_" + t + "_sync_state ON " + t + " (sync_state)").Error; err != nil {
							b.Fatal(err)
						}
					}
				}
				seedHistory(b, s, n)
				b.StartTimer()
				var total int
				work := func() {
					seq := int64(0)
					for {
						bf, err := s.Backfill(ctx, 1000)
						if err != nil {
							b.Fatal(err)
						}
						if bf.Records == 0 {
							return
						}
						total += bf.Records
						for relayAndAccept(b, s, wire.MaxBatch, &seq) > 0 {
						}
					}
				}
				var frames int
				if os.Getenv("SCSYNC_WAL_OWNERS") != "" {
					c := countWAL(b, s, work)
					frames = c.frames
					b.Log(c.table(total))
				} else {
					frames = countFrames(b, s, work)
				}
				b.StopTimer()
				b.ReportMetric(float64(frames)*1000/float64(total), "frames/1000records")
				_ = s.Close()
				b.StartTimer()
			}
		})
	}
}

// countFrames runs fn on s with the WAL never checkpointed and counts the
// frames the WAL file grew by (its size; countWAL reads them, slowly).
func countFrames(tb testing.TB, s *Store, fn func()) int {
	tb.Helper()
	walFromEmpty(tb, s)
	fn()
	fi, err := os.Stat(s.path + "-wal")
	if err != nil {
		tb.Fatal(err)
	}
	var ps int
	if err := s.db.Raw("PRAGMA page_size").Row().Scan(&ps); err != nil {
		tb.Fatal(err)
	}
	if err := s.db.Exec("PRAGMA wal_autocheckpoint=4000").Error; err != nil {
		tb.Fatal(err)
	}
	return int((fi.Size() - 32) / int64(24+ps))
}
