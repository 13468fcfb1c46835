package retention

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	records *prometheus.CounterVec
	runs    *prometheus.CounterVec
}

// newMetrics builds the collectors and registers them on reg (when not
// nil). Objects archived, restored and deleted are counted by the file
// service (scsync_files_objects_*_total).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "retention",
			Name: "records_total", Help: "Records retention changed, by action deleted|backed-up|restored."}, []string{"action"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "retention",
			Name: "runs_total", Help: "Clinic policies applied, by result ok|error."}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.records, m.runs} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
