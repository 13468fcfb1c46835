package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
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

// BenchmarkApplyLive measures the cloud's live up path as the replication
// benchmark drives it: each op is one transaction of 30 new patients of
// about 1 KB (a few up messages taken together), then a relay round over
// their outbox rows (publish does nothing). It reports the CPU time per
// record of this process (the store's side) and of the PostgreSQL backend
// serving it (the store runs on one connection), besides the wall time.
//
//	go test ./internal/store -run '^$' -bench ApplyLive -benchtime 300x
func BenchmarkApplyLive(b *testing.B) {
	s, err := Open(context.Background(), testenv.PostgresDB(b), &seqIDs{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	sqlDB, err := s.db.DB()
	if err != nil {
		b.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1)
	ctx := context.Background()
	const clinic, perOp = ids.ID(600), 30
	if _, _, err := s.CreateClinic(ctx, clinic, "bench", ""); err != nil {
		b.Fatal(err)
	}
	var backend int
	if err := s.db.Raw("SELECT pg_backend_pid()").Scan(&backend).Error; err != nil {
		b.Fatal(err)
	}
	notes := strings.Repeat("Lorem ipsum dolor sit amet, \"consectetur\" adipiscing elit. ", 16)
	next := ids.ID(1)
	op := func() {
		es := make([]wire.Envelope, perOp)
		for i := range es {
			es[i] = changeOf(clinic, next, next, records.Patient{ChartNo: fmt.Sprint("C", next), Name: fmt.Sprint("Patient ", next),
				BirthDate: "1970-01-01", Phone: "+1 555 0100", Notes: notes})
			next++
		}
		res, err := s.ApplyUp(ctx, clinic, es)
		if err != nil || res.Accepted != perOp {
			b.Fatalf("ApplyUp = %+v, %v", res.Accepted, err)
		}
		n, err := s.RelayBatch(ctx, 1000, func(context.Context, wire.Batch) error { return nil })
		if err != nil || n != perOp {
			b.Fatalf("RelayBatch = %d, %v", n, err)
		}
	}
	for range 20 { // warm: the connection's statements, the plans
		op()
	}
	self0, pg0 := selfCPU(), procCPU(b, backend)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		op()
	}
	b.StopTimer()
	records := float64(b.N * perOp)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/records, "µs/record")
	b.ReportMetric(float64((selfCPU()-self0).Microseconds())/records, "cpu-µs/record")
	b.ReportMetric(float64((procCPU(b, backend)-pg0).Microseconds())/records, "pg-cpu-µs/record")
}

// selfCPU is the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time process pid used so far (user + system, from
// /proc, in clock ticks of 10 ms).
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Skipf("the PostgreSQL backend's CPU time is not readable here: %v", err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
