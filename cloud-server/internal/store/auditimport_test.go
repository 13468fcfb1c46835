package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/audit/audittest"
	"github.com/scsync/scsync/shared/testenv"
)

// A clinic's audit entries arrive at the cloud in batches (Import). The
// new ones of a batch are inserted together; a batch that repeats entries
// already kept, skips ahead or breaks the chain anywhere keeps nothing of
// itself, and the chain stays whole.
func TestAuditImportBatches(t *testing.T) {
	ctx := context.Background()
	newLog := func() *audit.Log { return auditLog(t, open(t)) }
	const chain = "local:100"
	src, dst := newLog(), newLog()
	const n = 1234 // more than one INSERT's worth
	for i := range n {
		if _, err := src.Append(ctx, audit.Entry{Chain: chain, Clinic: 100, Actor: "person:7", Action: "create",
			Kind: "patients", Target: fmt.Sprint(i), Outcome: 201}); err != nil {
			t.Fatal(err)
		}
	}
	var all []audit.Entry
	for len(all) < n {
		page, err := src.List(ctx, audit.Query{Chain: chain, After: int64(len(all)), Limit: 5000})
		if err != nil || len(page) == 0 {
			t.Fatalf("List = %d entries, %v", len(page), err)
		}
		all = append(all, page...)
	}
	head := func() int64 {
		h, err := dst.Head(ctx, chain)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	if got, err := dst.Import(ctx, chain, all[:700]); err != nil || got != 700 {
		t.Fatalf("Import 1..700 = %d, %v", got, err)
	}
	// A gap before the batch: refused.
	if _, err := dst.Import(ctx, chain, all[701:900]); !errors.Is(err, audit.ErrAhead) {
		t.Fatalf("Import 702..900 = %v, want ErrAhead", err)
	}
	// A tampered entry in the middle of a batch: the entries before it are not kept either.
	bad := append([]audit.Entry(nil), all[700:1000]...)
	bad[150].Detail = "changed"
	if _, err := dst.Import(ctx, chain, bad); !errors.Is(err, audit.ErrBroken) {
		t.Fatalf("Import of a tampered batch = %v, want ErrBroken", err)
	}
	if h := head(); h != 700 {
		t.Fatalf("head after refused batches = %d, want 700", h)
	}
	// Sent again with the rest: the repeated entries are skipped.
	if got, err := dst.Import(ctx, chain, all[500:]); err != nil || got != n {
		t.Fatalf("Import 501..%d = %d, %v", n, got, err)
	}
	// All of it again: nothing changes.
	if got, err := dst.Import(ctx, chain, all); err != nil || got != n {
		t.Fatalf("Import of everything again = %d, %v", got, err)
	}
	v, err := dst.Verify(ctx, chain)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.Entries != n {
		t.Fatalf("Verify = %+v, want ok with %d entries", v, n)
	}
	kept, err := dst.List(ctx, audit.Query{Chain: chain, After: 1000, Limit: 5})
	if err != nil || len(kept) != 5 {
		t.Fatalf("List = %d, %v", len(kept), err)
	}
	for i, e := range kept {
		if e.Hash != all[1000+i].Hash || e.Target != all[1000+i].Target {
			t.Fatalf("entry %d = %+v, want %+v", e.Seq, e, all[1000+i])
		}
	}
}

// TestAuditImportMatchesGorm: Import writes, with its fixed statements on
// PostgreSQL (the entries from arrays, the head moved in the same
// statement), the rows gorm's import wrote, answers as it did for batches
// sent again, overlapping and refused, and keeps nothing of a refused one
// (audittest.CheckImport).
func TestAuditImportMatchesGorm(t *testing.T) {
	audittest.CheckImport(t, func(t *testing.T) *gorm.DB { return open(t).DB() })
}

// TestAuditImportRetriedConcurrently: the same batches uploaded at once
// through several nodes (a clinic's shipper retrying after a timeout
// reaches another node) are each kept once: the head row's lock orders the
// imports, and each skips what the one before it kept.
func TestAuditImportRetriedConcurrently(t *testing.T) {
	ctx := context.Background()
	url := testenv.PostgresDB(t)
	const chain = "local:4242"
	all := audittest.Chain(chain, 4242, 1, "", 1500)
	var logs []*audit.Log
	for range 4 {
		logs = append(logs, auditLog(t, openOn(t, url)))
	}
	for round := range 3 {
		batch := all[:500*(round+1)] // from the start: the new chain's head row made at once too
		errs := make(chan error, len(logs))
		for _, l := range logs {
			go func() {
				head, err := l.Import(ctx, chain, batch)
				if err == nil && head != int64(len(batch)) {
					err = fmt.Errorf("head %d, want %d", head, len(batch))
				}
				errs <- err
			}()
		}
		for range logs {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: Import = %v", round, err)
			}
		}
	}
	var rows int64
	if err := logs[0].DB().Raw("SELECT count(*) FROM audit_log WHERE chain = ?", chain).Scan(&rows).Error; err != nil || rows != 1500 {
		t.Fatalf("audit_log holds %d rows, %v; want 1500", rows, err)
	}
	if v, err := logs[0].Verify(ctx, chain); err != nil || !v.OK || v.Entries != 1500 {
		t.Fatalf("Verify = %+v, %v", v, err)
	}
}

// BenchmarkAuditImport: the cloud's import of a clinic's upload of 500 new
// entries (the shipper's batch), through gorm as before (audittest.
// ImportGorm) and through Import's fixed statements: the process's and
// PostgreSQL's backend's CPU per entry, counted around the imports alone
// (each batch is made, and its making's garbage collected, before).
//
//	go test ./internal/store -run '^$' -bench AuditImport -benchtime 200x
func BenchmarkAuditImport(b *testing.B) {
	for _, way := range []string{"gorm", "fixed"} {
		b.Run(way, func(b *testing.B) {
			s := openOn(b, testenv.PostgresDB(b))
			sqlDB, err := s.db.DB()
			if err != nil {
				b.Fatal(err)
			}
			sqlDB.SetMaxOpenConns(1)
			ctx := context.Background()
			l := auditLog(b, s)
			var backend int
			if err := s.db.Raw("SELECT pg_backend_pid()").Scan(&backend).Error; err != nil {
				b.Fatal(err)
			}
			const chain, perOp, warm = "local:600", 500, 20
			prev, pgCPU, cpu := "", time.Duration(0), time.Duration(0)
			op := func(i int) {
				b.StopTimer()
				batch := audittest.Chain(chain, 600, int64(i*perOp+1), prev, perOp)
				prev = batch[perOp-1].Hash
				runtime.GC() // the batch's making is not the import's garbage
				self0, pg0 := selfCPU(), procCPU(b, backend)
				b.StartTimer()
				var head int64
				if way == "gorm" {
					head, err = audittest.ImportGorm(ctx, s.DB(), chain, batch)
				} else {
					head, err = l.Import(ctx, chain, batch)
				}
				b.StopTimer()
				cpu, pgCPU = cpu+selfCPU()-self0, pgCPU+procCPU(b, backend)-pg0
				if err != nil || head != batch[perOp-1].Seq {
					b.Fatalf("import = %d, %v", head, err)
				}
				b.StartTimer()
			}
			for i := range warm { // the connection's statements, the plans
				op(i)
			}
			cpu, pgCPU = 0, 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				op(warm + i)
			}
			b.StopTimer()
			entries := float64(b.N * perOp)
			b.ReportMetric(float64(cpu.Microseconds())/entries, "cpu-µs/entry")
			b.ReportMetric(float64(pgCPU.Microseconds())/entries, "pg-cpu-µs/entry")
		})
	}
}

// auditLog opens the audit log on s's database.
func auditLog(tb testing.TB, s *Store) *audit.Log {
	tb.Helper()
	l, err := audit.Open(context.Background(), s.DB())
	if err != nil {
		tb.Fatal(err)
	}
	return l
}
