//go:build unix

package api

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// BenchmarkCreate is the replication benchmark's create in the process:
// POST /v1/patients with a patient of about 1 KB through the API's handler
// (decoding, the save in a group commit, the answer) by 8 goroutines, as
// its 8 clients do; no HTTP connection, authentication or audit entry
// (go test -bench Create -cpuprofile). cpu-µs/record is the process's CPU
// (getrusage) per create, group commits and their fsyncs included.
func BenchmarkCreate(b *testing.B) {
	dir := b.TempDir()
	gen, err := ids.NewGenerator(7, ids.GeneratorOptions{StateFile: filepath.Join(dir, "ids.state")})
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "db"), 9001, gen)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	mux := httpapi.NewMux()
	New(st, nil, func() {}, slog.New(slog.DiscardHandler)).Register(mux)
	notes := strings.Repeat("x", 900)
	var n atomic.Int64
	cpu0 := cpuTime()
	b.SetParallelism(4) // × GOMAXPROCS 2: the benchmark's 8 clients
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			body := fmt.Sprintf(`{"data":{"chart_no":"B-%06d","name":"Bench Patient %d","notes":%q}}`, i, i, notes)
			r := httptest.NewRequest(http.MethodPost, "/v1/patients", io.NopCloser(bytes.NewReader([]byte(body))))
			r.ContentLength = int64(len(body))
			w := httptest.NewRecorder()
			mux.ServeHTTP(w, r)
			if w.Code != http.StatusCreated {
				b.Fatalf("POST /v1/patients = %d %s", w.Code, w.Body)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n.Load()), "cpu-µs/record")
}

// cpuTime is the process's CPU time so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
