package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// BenchmarkApplyBackfill measures the cloud's apply of a backfill: each op
// is one transaction of 1,000 new records of one clinic (studies, or
// images each naming its file), as sc-cloud applies a few up messages
// taken together. Much of its wall time is PostgreSQL's: compare the CPU
// time of the test process (user+sys) or a CPU profile too.
//
//	go test ./internal/store -run '^$' -bench ApplyBackfill -benchtime 20x
func BenchmarkApplyBackfill(b *testing.B) {
	for _, kind := range []wire.Kind{wire.KindStudy, wire.KindImage} {
		b.Run(string(kind), func(b *testing.B) { benchApplyBackfill(b, kind) })
	}
}

func benchApplyBackfill(b *testing.B, kind wire.Kind) {
	s, err := Open(context.Background(), testenv.PostgresDB(b), &seqIDs{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const clinic, perOp = ids.ID(600), 1000
	if _, _, err := s.CreateClinic(ctx, clinic, "bench", ""); err != nil {
		b.Fatal(err)
	}
	parents := map[wire.Kind]ids.ID{wire.KindPatient: 1, wire.KindStudy: 2}
	if _, err := s.ApplyUp(ctx, clinic, []wire.Envelope{
		changeOf(clinic, 1, 1, records.Sample(wire.KindPatient, 1, nil)),
		changeOf(clinic, 2, 2, records.Sample(wire.KindStudy, 2, parents)),
	}); err != nil {
		b.Fatal(err)
	}
	next := ids.ID(3)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		es := make([]wire.Envelope, perOp)
		for i := range es {
			c := records.Sample(kind, int(next), parents)
			if im, ok := c.(records.Image); ok {
				im.SHA256 = fmt.Sprintf("%064x", int64(next))
				c = im
			}
			es[i] = changeOf(clinic, next, next, c)
			es[i].At = time.Now()
			next++
		}
		b.StartTimer()
		res, err := s.ApplyUp(ctx, clinic, es)
		if err != nil || res.Accepted != perOp {
			b.Fatalf("ApplyUp = %+v, %v", res.Accepted, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*perOp), "µs/record")
}
