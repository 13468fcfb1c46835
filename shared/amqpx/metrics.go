package amqpx

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of publish_failures_total{reason}.
const (
	reasonNack       = "nack"
	reasonUnroutable = "unroutable"
	reasonClosed     = "closed"
	reasonTimeout    = "timeout"
	reasonCanceled   = "canceled"
	reasonInvalid    = "invalid"
)

// Label values of consumed_total{result}.
const (
	resultAck    = "ack"
	resultPoison = "poison"
	resultRetry  = "retry"
)

type metrics struct {
	published       prometheus.Counter
	publishFailures *prometheus.CounterVec
	consumed        *prometheus.CounterVec
	reconnects      prometheus.Counter
	connected       prometheus.Gauge
	blocked         prometheus.Gauge
}

// newMetrics builds the Client's metrics and registers them on reg when reg
// is not nil. Every series carries a constant "connection" label (the
// connection name) so several Clients can share one registry.
func newMetrics(reg prometheus.Registerer, connection string) (*metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{
			Namespace:   "scsync",
			Subsystem:   "amqp",
			Name:        name,
			Help:        help,
			ConstLabels: prometheus.Labels{"connection": connection},
		}
	}
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts(
			opts("published_total", "Messages published and confirmed by the broker."))),
		publishFailures: prometheus.NewCounterVec(prometheus.CounterOpts(
			opts("publish_failures_total", "Publishes that returned an error, by reason.")), []string{"reason"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts(
			opts("consumed_total", "Deliveries handled, by result (ack, poison, retry).")), []string{"result"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts(
			opts("reconnects_total", "Successful connections after the first one."))),
		connected: prometheus.NewGauge(prometheus.GaugeOpts(
			opts("connected", "1 while connected to the broker."))),
		blocked: prometheus.NewGauge(prometheus.GaugeOpts(
			opts("blocked", "1 while the broker blocks publishing (connection.blocked)."))),
	}
	// Create every series up front so dashboards see zeros, not gaps.
	for _, r := range []string{reasonNack, reasonUnroutable, reasonClosed, reasonTimeout, reasonCanceled, reasonInvalid} {
		m.publishFailures.WithLabelValues(r)
	}
	for _, r := range []string{resultAck, resultPoison, resultRetry} {
		m.consumed.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.published, m.publishFailures, m.consumed, m.reconnects, m.connected, m.blocked} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register amqp metrics for connection %q: %w", connection, err)
		}
	}
	return m, nil
}
