package telemetry

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is the release this binary was built from. Release builds set it:
//
//	go build -ldflags "-X github.com/scsync/scsync/shared/telemetry.Version=v1.2.3"
//
// (deployments/docker/Dockerfile does). Without it, BuildVersion falls back to
// the VCS revision the Go toolchain recorded, or "dev".
var Version = ""

// BuildVersion is Version, or the VCS revision from the build info, or "dev".
func BuildVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			return rev + dirty
		}
	}
	return "dev"
}

// buildInfo is scsync_build_info{version,goversion} = 1.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "scsync", Name: "build_info",
		Help:        "Always 1; the labels name the release and Go version of this binary.",
		ConstLabels: prometheus.Labels{"version": BuildVersion(), "goversion": runtime.Version()}})
	g.Set(1)
	return g
}
