package telemetry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scsync/scsync/shared/buildinfo"
)

func TestHTTPMetricsByPatternAndCode(t *testing.T) {
	reg := prometheus.NewRegistry()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/records/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "missing" {
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("POST /v1/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	var inside float64
	mux.HandleFunc("GET /v1/flight", func(w http.ResponseWriter, _ *http.Request) {
		inside = gaugeValue(t, reg, "scsync_http_requests_in_flight")
		w.WriteHeader(http.StatusNoContent)
	})
	h := HTTPMetrics(reg)(mux)
	srv := httptest.NewServer(recoverer(h))
	defer srv.Close()

	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/records/1", 200},
		{"GET", "/v1/records/2", 200},
		{"GET", "/v1/records/missing", 404},
		{"GET", "/nowhere", 404},
		{"POST", "/v1/boom", 500},
		{"GET", "/v1/flight", 204},
		{"BREW", "/v1/records/1", 405},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
	want := `
# HELP scsync_http_requests_total HTTP requests served, by route pattern, method and status code.
# TYPE scsync_http_requests_total counter
scsync_http_requests_total{code="200",method="GET",route="GET /v1/records/{id}"} 2
scsync_http_requests_total{code="204",method="GET",route="GET /v1/flight"} 1
scsync_http_requests_total{code="404",method="GET",route="GET /v1/records/{id}"} 1
scsync_http_requests_total{code="404",method="GET",route="unmatched"} 1
scsync_http_requests_total{code="405",method="OTHER",route="unmatched"} 1
scsync_http_requests_total{code="500",method="POST",route="POST /v1/boom"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "scsync_http_requests_total"); err != nil {
		t.Fatal(err)
	}
	if n := histogramCount(t, reg, "scsync_http_request_duration_seconds", map[string]string{"route": "GET /v1/records/{id}", "method": "GET"}); n != 3 {
		t.Fatalf("latency samples of GET /v1/records/{id}: %d, want 3", n)
	}
	if inside != 1 {
		t.Fatalf("in-flight gauge during a request: %v, want 1", inside)
	}
	if v := gaugeValue(t, reg, "scsync_http_requests_in_flight"); v != 0 {
		t.Fatalf("in-flight gauge after the requests: %v, want 0", v)
	}
}

func recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if recover() != nil {
				w.WriteHeader(http.StatusInternalServerError)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not exported", name)
	return 0
}

// histogramCount is the sample count of the series of name whose labels
// include want.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			return m.GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func TestBuildInfo(t *testing.T) {
	old := buildinfo.Version
	defer func() { buildinfo.Version = old }()
	buildinfo.Version = "v9.8.7"
	reg := NewRegistry()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := buildinfo.Read()
	for _, mf := range mfs {
		if mf.GetName() != "scsync_build_info" {
			continue
		}
		m := mf.GetMetric()[0]
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if got["version"] != "v9.8.7" || got["commit"] != want.ShortCommit() || got["goversion"] != want.Go || m.GetGauge().GetValue() != 1 {
			t.Fatalf("scsync_build_info = %v %v, want version v9.8.7, commit %q, goversion %s, value 1", got, m.GetGauge().GetValue(), want.ShortCommit(), want.Go)
		}
		return
	}
	t.Fatal("scsync_build_info not exported")
}

func TestDependencies(t *testing.T) {
	reg := prometheus.NewRegistry()
	RegisterDependencies(reg, func(context.Context) map[string]string {
		return map[string]string{"redis": "ok", "s3": "dial tcp: connection refused"}
	})
	want := `
# HELP scsync_dependency_up 1 if the dependency's readiness check passed at this scrape, else 0.
# TYPE scsync_dependency_up gauge
scsync_dependency_up{dependency="redis"} 1
scsync_dependency_up{dependency="s3"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "scsync_dependency_up"); err != nil {
		t.Fatal(err)
	}
}

// cloningGuard serves a copy of the request, as the authorization guard does
// when it adds the caller to the context.
type cloningGuard struct{ mux *http.ServeMux }

func (g cloningGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), cloningGuard{}, "caller")))
}

func (g cloningGuard) Handler(r *http.Request) (http.Handler, string) { return g.mux.Handler(r) }

// TestHTTPMetricsThroughAGuard: the route is named even when the handler the
// metrics wrap serves a copy of the request (the mux sets the pattern on it).
func TestHTTPMetricsThroughAGuard(t *testing.T) {
	reg := prometheus.NewRegistry()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/patients/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	h := HTTPMetrics(reg)(cloningGuard{mux: mux})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/patients/7", nil))
	want := `
# HELP scsync_http_requests_total HTTP requests served, by route pattern, method and status code.
# TYPE scsync_http_requests_total counter
scsync_http_requests_total{code="200",method="GET",route="GET /v1/patients/{id}"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "scsync_http_requests_total"); err != nil {
		t.Error(err)
	}
}

// TestHTTPMetricsConcurrent: requests served at once on several routes and
// codes are each counted once, in their own series, while the series are
// being added.
func TestHTTPMetricsConcurrent(t *testing.T) {
	reg := prometheus.NewRegistry()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /a/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.WriteHeader(code)
	})
	h := HTTPMetrics(reg)(mux)
	codes := []int{200, 201, 404, 409, 503}
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				code := codes[(w+i)%len(codes)]
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/a/"+strconv.Itoa(code), nil))
			}
		})
	}
	wg.Wait()
	var want strings.Builder
	want.WriteString("# HELP scsync_http_requests_total HTTP requests served, by route pattern, method and status code.\n# TYPE scsync_http_requests_total counter\n")
	for _, code := range codes {
		fmt.Fprintf(&want, "scsync_http_requests_total{code=\"%d\",method=\"GET\",route=\"GET /a/{code}\"} %d\n", code, workers*each/len(codes))
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want.String()), "scsync_http_requests_total"); err != nil {
		t.Error(err)
	}
	if n := histogramCount(t, reg, "scsync_http_request_duration_seconds", map[string]string{"route": "GET /a/{code}", "method": "GET"}); n != workers*each {
		t.Errorf("latency samples %d, want %d", n, workers*each)
	}
}

// BenchmarkHTTPMetrics is the middleware's cost per request around a
// handler that does nothing.
func BenchmarkHTTPMetrics(b *testing.B) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/locks/batch", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	h := HTTPMetrics(prometheus.NewRegistry())(mux)
	r := httptest.NewRequest(http.MethodPost, "/v1/locks/batch", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}
