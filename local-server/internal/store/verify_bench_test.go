package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/antientropy"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// BenchmarkVerifyScan is the clinic's half of an anti-entropy run: every
// record's digest added into the bucket sums (EachDigest into an
// antientropy.Set). SCSYNC_VERIFY_DB names an existing sc-local database
// to scan (SCSYNC_VERIFY_CLINIC its clinic; a path that does not exist yet
// is created with SCSYNC_VERIFY_SEED studies, default a million, and kept), e.g. a copy of the verify
// benchmark's at a million records; without it, 20,000 imported studies.
// It reports records/s, the peak Go heap in use and the peak anonymous
// resident memory of the process, both sampled during the scan, and the
// anonymous memory before it (the runtime, SQLite's page caches).
func BenchmarkVerifyScan(b *testing.B) {
	ctx := context.Background()
	var s *Store
	path := os.Getenv("SCSYNC_VERIFY_DB")
	if _, err := os.Stat(path); path != "" && errors.Is(err, fs.ErrNotExist) {
		// A database to keep for later runs: SCSYNC_VERIFY_SEED studies
		// (default a million), synced, of the test clinic.
		n, err := strconv.Atoi(cmp.Or(os.Getenv("SCSYNC_VERIFY_SEED"), "1000000"))
		if err != nil {
			b.Fatalf("SCSYNC_VERIFY_SEED: %v", err)
		}
		gen, err := ids.NewGenerator(5, ids.GeneratorOptions{StateFile: path + ".ids"})
		if err != nil {
			b.Fatal(err)
		}
		if s, err = Open(path, clinic, gen); err != nil {
			b.Fatal(err)
		}
		seedStudies(b, s, n)
		b.Logf("seeded %d studies into %s (SCSYNC_VERIFY_CLINIC=%d)", n, path, clinic)
		_ = s.Close()
	}
	if path != "" {
		s = openExisting(b, path, envClinic(b, "SCSYNC_VERIFY_CLINIC"))
	} else {
		s = open(b)
		seedStudies(b, s, 20_000)
	}
	runtime.GC()
	before := rssAnon()
	for b.Loop() {
		stop := make(chan struct{})
		peaks := make(chan [2]uint64, 1)
		go func() {
			var peak [2]uint64
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				peak[0] = max(peak[0], ms.HeapInuse)
				peak[1] = max(peak[1], rssAnon())
				select {
				case <-stop:
					peaks <- peak
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		t0 := time.Now()
		var set antientropy.Set
		if err := s.EachDigest(ctx, func(key, digest string) error { set.Add(key, digest); return nil }); err != nil {
			b.Fatal(err)
		}
		_ = set.Hashes()
		took := time.Since(t0)
		close(stop)
		peak := <-peaks
		b.ReportMetric(float64(set.Count()), "records")
		b.ReportMetric(float64(set.Count())/took.Seconds(), "records/s")
		b.ReportMetric(float64(peak[0])/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(peak[1])/(1<<20), "peak-anon-MiB")
		b.ReportMetric(float64(before)/(1<<20), "anon-before-MiB")
	}
}

func seedStudies(b *testing.B, s *Store, n int) {
	b.Helper()
	ctx := context.Background()
	pids, err := s.Import(ctx, []Import{{Kind: wire.KindPatient, Content: records.Patient{Name: "Bench"}}})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += 5000 {
		items := make([]Import, min(5000, n-i))
		for j := range items {
			items[j] = Import{Kind: wire.KindStudy, Content: records.Study{PatientID: pids[0], StudyDate: "2025-01-02", Description: fmt.Sprintf("Study %d", i+j)}}
		}
		if _, err := s.Import(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
	// As the backfill and the cloud's acceptances would leave them.
	for _, table := range []string{"patients", "studies"} {
		if err := s.db.Exec("UPDATE " + table + " SET sync_state = 'synced', queued = true").Error; err != nil {
			b.Fatal(err)
		}
	}
}

// rssAnon is this process's RssAnon in bytes (0 where /proc is absent).
func rssAnon() uint64 {
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// openExisting opens (and migrates) the sc-local database at path as
// clinic's, with an id generator of its own, for a benchmark.
func openExisting(b *testing.B, path string, clinic ids.ID) *Store {
	b.Helper()
	gen, err := ids.NewGenerator(5, ids.GeneratorOptions{StateFile: filepath.Join(b.TempDir(), "ids.state")})
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(path, clinic, gen)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// envClinic is the clinic id in the environment variable name.
func envClinic(b *testing.B, name string) ids.ID {
	b.Helper()
	c, err := strconv.ParseInt(os.Getenv(name), 10, 64)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return ids.ID(c)
}
