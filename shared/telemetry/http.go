package telemetry

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strconv"
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
				requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
				latency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
				if p != nil {
					panic(p) // for the recovering middleware outside (httpapi.Recover)
				}
			}()
			next.ServeHTTP(sw, r)
		})
	}
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
