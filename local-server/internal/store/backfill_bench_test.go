package store

import (
	"context"
	"fmt"
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
		var pats []Import
		for i := range n / 100 {
			pats = append(pats, Import{Kind: wire.KindPatient, Content: records.Patient{Name: fmt.Sprintf("Patient %d", i)}})
		}
		pids, err := s.Import(ctx, pats)
		if err != nil {
			b.Fatal(err)
		}
		items := make([]Import, n-len(pats))
		for i := range items {
			date := fmt.Sprintf("20%02d-%02d-%02d", 16+(i*7919)%10, 1+(i*31)%12, 1+(i*17)%28)
			items[i] = Import{Kind: wire.KindStudy, Content: records.Study{PatientID: pids[i%len(pids)], StudyDate: date, Description: fmt.Sprintf("Study %d", i)}}
		}
		if _, err := s.Import(ctx, items); err != nil {
			b.Fatal(err)
		}
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
