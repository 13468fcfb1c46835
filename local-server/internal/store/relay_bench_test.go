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
			n := relayAndAccept(b, s, round, &seq)
			if n == 0 {
				break
			}
			total += n
		}
		b.StopTimer()
		_ = s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/record")
}

// relayAndAccept is a relay round and the cloud's acceptance of it, as
// sc-local sees them: up to limit outbox rows read, deleted once "sent",
// and their changes applied back as accepted with the next cloud_seqs
// after *seq. It returns how many rows there were (0: the outbox is empty).
func relayAndAccept(b *testing.B, s *Store, limit int, seq *int64) int {
	b.Helper()
	ctx := context.Background()
	rows, err := s.NextOutbox(ctx, limit)
	if err != nil {
		b.Fatal(err)
	}
	if len(rows) == 0 {
		return 0
	}
	down := make([]wire.Envelope, len(rows))
	done := make([]int64, len(rows))
	for i, r := range rows {
		if err := json.Unmarshal([]byte(r.Envelope), &down[i]); err != nil {
			b.Fatal(err)
		}
		*seq++
		down[i].Type, down[i].CloudSeq = wire.TypeApplied, *seq
		done[i] = r.ID
	}
	if err := s.DeleteOutbox(ctx, done...); err != nil {
		b.Fatal(err)
	}
	res, err := s.ApplyDown(ctx, down)
	if err != nil || res.Applied != len(down) {
		b.Fatalf("ApplyDown = %+v, %v", res, err)
	}
	return len(rows)
}
