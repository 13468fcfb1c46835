package telemetry

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterDependencies exports scsync_dependency_up{dependency}: 1 when the
// dependency's readiness check passes, 0 when it fails. checks runs at
// scrape time (a server's httpapi.Health.Ready, name → "ok" or the error),
// so the alert rules see the same verdict /readyz gives — including the
// optional dependencies (lockd) that do not make the server unready.
func RegisterDependencies(reg prometheus.Registerer, checks func(context.Context) map[string]string) {
	reg.MustRegister(depCollector{checks: checks, desc: prometheus.NewDesc("scsync_dependency_up",
		"1 if the dependency's readiness check passed at this scrape, else 0.", []string{"dependency"}, nil)})
}

type depCollector struct {
	checks func(context.Context) map[string]string
	desc   *prometheus.Desc
}

func (c depCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c depCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for name, res := range c.checks(ctx) {
		v := 0.0
		if res == "ok" {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, name)
	}
}
