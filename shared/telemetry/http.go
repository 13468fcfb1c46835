package telemetry

import (
	"bufio"
	"errors"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HTTPMetrics counts and times the requests of one HTTP server, labelled by
// the ServeMux pattern that served them (bounded: never the raw path),
// method and status code:
//
//	scsync_http_requests_total{route,method,code}
//	scsync_http_request_duration_seconds{route,method}   (histogram)
//	scsync_http_requests_in_flight
//
// Wrap the mux itself, so the pattern is known after it served:
//
//	handler := telemetry.HTTPMetrics(reg)(mux)
//
// A request no pattern matched is labelled route="unmatched". WebSocket
// upgrades are counted when the connection ends.
func HTTPMetrics(reg prometheus.Registerer) func(http.Handler) http.Handler {
	const ns, sub = "scsync", "http"
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
		Help: "HTTP requests served, by route pattern, method and status code."}, []string{"route", "method", "code"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
		Help:    "HTTP request latency until the handler returned, by route pattern and method.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"route", "method"})
	inFlight := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "requests_in_flight",
		Help: "HTTP requests being served now."})
	if reg != nil {
		reg.MustRegister(requests, latency, inFlight)
	}
	cache := &seriesCache{requests: requests, latency: latency}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inFlight.Inc()
			start := time.Now()
			sw := &statusWriter{ResponseWriter: w}
			defer func() {
				inFlight.Dec()
				p := recover()
				if p != nil && sw.code == 0 {
					sw.code = http.StatusInternalServerError // what the recovering middleware outside answers
				}
				// The ServeMux sets r.Pattern on this very request before
				// calling the matched handler.
				route := r.Pattern
				if route == "" {
					// A handler that served a copy of the request (an
					// authorization guard adding to its context) leaves the
					// pattern on the copy: ask it.
					if m, ok := next.(patternFinder); ok {
						_, route = m.Handler(r)
					}
				}
				if route == "" {
					route = "unmatched"
				}
				method := methodLabel(r.Method)
				code := sw.code
				if code == 0 {
					code = http.StatusOK
				}
				m := cache.get(seriesKey{route, method, code})
				m.requests.Inc()
				m.latency.Observe(time.Since(start).Seconds())
				if p != nil {
					panic(p) // for the recovering middleware outside (httpapi.Recover)
				}
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

// seriesKey names the series of one route, method and status code.
type seriesKey struct {
	route, method string
	code          int
}

// series are the metrics of one seriesKey.
type series struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

// seriesCache looks each series up in the vectors once. WithLabelValues
// hashes the label values and takes the vector's lock on every call: about
// 5% of lockd's CPU for a lone lock call. Reads take no lock (a map that is
// never changed, behind an atomic pointer); a new series copies the map,
// which happens once per route, method and code.
type seriesCache struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	mu       sync.Mutex // serializes additions
	m        atomic.Pointer[map[seriesKey]series]
}

func (c *seriesCache) get(k seriesKey) series {
	if m := c.m.Load(); m != nil {
		if s, ok := (*m)[k]; ok {
			return s
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[seriesKey]series
	if m := c.m.Load(); m != nil {
		old = *m
	}
	if s, ok := old[k]; ok {
		return s
	}
	s := series{
		requests: c.requests.WithLabelValues(k.route, k.method, strconv.Itoa(k.code)),
		latency:  c.latency.WithLabelValues(k.route, k.method),
	}
	m := make(map[seriesKey]series, len(old)+1)
	maps.Copy(m, old)
	m[k] = s
	c.m.Store(&m)
	return s
}

// methodLabel keeps the method label bounded.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// statusWriter remembers the status code. It keeps http.Flusher and
// http.Hijacker working (event streams and WebSockets) and lets
// http.ResponseController reach the underlying writer.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("telemetry: the response writer cannot be hijacked")
	}
	if w.code == 0 {
		w.code = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// patternFinder is a handler that can name the route of a request
// (http.ServeMux and the authorization guard).
type patternFinder interface {
	Handler(r *http.Request) (http.Handler, string)
}
