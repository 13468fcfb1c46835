package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// BenchmarkImportStudies imports studies 20,000 per call, as the backfill
// benchmark does (go test -bench ImportStudies -cpuprofile).
func BenchmarkImportStudies(b *testing.B) {
	s := open(b)
	ctx := context.Background()
	var pats []Import
	for i := range 200 {
		pats = append(pats, Import{Kind: wire.KindPatient, Content: records.Patient{Name: fmt.Sprintf("Patient %d", i)}})
	}
	pids, err := s.Import(ctx, pats)
	if err != nil {
		b.Fatal(err)
	}
	const chunk = 20_000
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		items := make([]Import, chunk)
		for i := range items {
			items[i] = Import{Kind: wire.KindStudy, Content: records.Study{PatientID: pids[i%len(pids)], StudyDate: fmt.Sprintf("20%02d-%02d-%02d", 15+i%10, 1+i%12, 1+i%28), Description: fmt.Sprintf("Study %d", i)}}
		}
		if _, err := s.Import(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*chunk)/b.Elapsed().Seconds(), "records/s")
}
