package files

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	apiBytes   *prometheus.CounterVec
	verified   *prometheus.CounterVec
	verifyRead prometheus.Counter
	swept      prometheus.Counter
	archived   prometheus.Counter
	restored   prometheus.Counter
	deleted    prometheus.Counter
}

// newMetrics builds the collectors and registers them on reg (when not nil).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		apiBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "files",
			Name: "api_body_bytes_total", Help: "HTTP body bytes of the file API (JSON only: file bytes go straight to S3), by direction in|out."},
			[]string{"direction"}),
		verified: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "files",
			Name: "verifications_total", Help: "Uploaded objects verified, by result ok|mismatch."}, []string{"result"}),
		verifyRead: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "files",
			Name: "verify_read_bytes_total", Help: "Bytes read from S3 to hash multipart uploads."}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "files",
			Name: "swept_uploads_total", Help: "Abandoned multipart uploads aborted."}),
		archived: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "files",
			Name: "objects_archived_total", Help: "Objects moved to the cold bucket (retention backup)."}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "files",
			Name: "objects_restored_total", Help: "Objects restored from the cold bucket."}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "files",
			Name: "objects_deleted_total", Help: "Objects deleted from S3 after their records were un-synced for the grace period."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.apiBytes, m.verified, m.verifyRead, m.swept, m.archived, m.restored, m.deleted} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
