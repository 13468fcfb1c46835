package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// BenchmarkRelayAcceptLive is the clinic's store work after live creates
// (the replication benchmark's): the relay's read and delete of the
// outbox rows, and the cloud's acceptances of those changes applied, in
// rounds of 25, about what the relay's linger gathers while 8 clients
// create (go test -bench RelayAcceptLive -cpuprofile; the creates are not
// timed, ns/record is the relay's and the acceptances' alone).
func BenchmarkRelayAcceptLive(b *testing.B) {
	const (
		n     = 2000
		round = 25
	)
	ctx := context.Background()
	notes := strings.Repeat("x", 900) // about 1 KB a record, as the benchmark's
	var total int
	for b.Loop() {
		b.StopTimer()
		s := open(b)
		for i := range n {
			if _, err := s.Save(ctx, Edit{Kind: wire.KindPatient, Content: records.Patient{Name: fmt.Sprintf("Patient %d", i), Notes: notes}}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		seq := int64(0)
		for {
			rows, err := s.NextOutbox(ctx, round)
			if err != nil {
				b.Fatal(err)
			}
			if len(rows) == 0 {
				break
			}
			down := make([]wire.Envelope, len(rows))
			done := make([]int64, len(rows))
			for i, r := range rows {
				if err := json.Unmarshal([]byte(r.Envelope), &down[i]); err != nil {
					b.Fatal(err)
				}
				seq++
				down[i].Type, down[i].CloudSeq = wire.TypeApplied, seq
				done[i] = r.ID
			}
			if err := s.DeleteOutbox(ctx, done...); err != nil {
				b.Fatal(err)
			}
			res, err := s.ApplyDown(ctx, down)
			if err != nil || res.Applied != len(down) {
				b.Fatalf("ApplyDown = %+v, %v", res, err)
			}
			total += len(rows)
		}
		b.StopTimer()
		_ = s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/record")
}
