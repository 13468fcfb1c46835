package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scsync/scsync/shared/buildinfo"
)

// buildInfo is scsync_build_info{version,commit,goversion} = 1: the release
// (buildinfo.Version, set by the packaging with -ldflags -X, else the
// module version), the VCS commit and the Go version of this binary — the
// same identity --version prints and /readyz shows.
func buildInfo() prometheus.Collector {
	in := buildinfo.Read()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "scsync", Name: "build_info",
		Help:        "Always 1; the labels name the release, VCS commit and Go version of this binary.",
		ConstLabels: prometheus.Labels{"version": in.Version, "commit": in.ShortCommit(), "goversion": in.Go}})
	g.Set(1)
	return g
}
