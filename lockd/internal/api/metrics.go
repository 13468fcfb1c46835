package api

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	grants   prometheus.Counter
	denials  *prometheus.CounterVec // reason: the error code
	renewals prometheus.Counter
	releases *prometheus.CounterVec   // how: holder, force
	nodes    *prometheus.CounterVec   // event: lease, renew, release
	requests *prometheus.CounterVec   // op, code ("ok" or the error code)
	latency  *prometheus.HistogramVec // op

	// Curried once: a label lookup per request costs a hash and a lock.
	holderReleases, forceReleases prometheus.Counter
	batchOK                       [3]prometheus.Counter // requests ok of acquire, renew, release in a batch
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "scsync", "lockd"
	m := &metrics{
		grants: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "grants_total", Help: "Locks granted."}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "denials_total", Help: "Requests refused, by reason (the error code: held, not_yours, expired, forbidden, …)."}, []string{"reason"}),
		renewals: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "renewals_total", Help: "Locks renewed."}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "releases_total", Help: "Locks released, by the holder or forced by an admin."}, []string{"how"}),
		nodes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "node_lease_events_total", Help: "Cloud node id leases granted, renewed and released."}, []string{"event"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "requests_total", Help: "API requests, by operation and result code (ok or the error code)."}, []string{"op", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "request_duration_seconds", Help: "API request latency, by operation.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"op"}),
	}
	m.holderReleases, m.forceReleases = m.releases.WithLabelValues("holder"), m.releases.WithLabelValues("force")
	for i, op := range []string{"acquire", "renew", "release"} {
		m.batchOK[i] = m.requests.WithLabelValues(op, "ok")
	}
	reg.MustRegister(m.grants, m.denials, m.renewals, m.releases, m.nodes, m.requests, m.latency)
	return m
}
