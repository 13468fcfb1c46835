package amqpx

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const testURL = "amqp://guest:secret@127.0.0.1:5672/v"

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	got, err := Config{URL: testURL}.withDefaults()
	if err != nil {
		t.Fatalf("withDefaults() error = %v", err)
	}
	want := Config{
		URL:            testURL,
		Prefetch:       64,
		Heartbeat:      10 * time.Second,
		ReconnectMin:   200 * time.Millisecond,
		ReconnectMax:   30 * time.Second,
		ConfirmTimeout: 30 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("withDefaults() = %+v, want %+v", got, want)
	}
	// Set values are kept.
	set := Config{URL: testURL, Prefetch: 5, Heartbeat: 2 * time.Second, ReconnectMin: time.Second, ReconnectMax: time.Second, ConfirmTimeout: time.Second}
	if got, _ := set.withDefaults(); !reflect.DeepEqual(got, set) {
		t.Errorf("withDefaults() = %+v, want %+v", got, set)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		setting string // must appear in the error
	}{
		{"no url", Config{}, "URL"},
		{"bad scheme", Config{URL: "http://guest:secret@host/"}, "URL"},
		{"negative prefetch", Config{URL: testURL, Prefetch: -1}, "Prefetch"},
		{"huge prefetch", Config{URL: testURL, Prefetch: 70000}, "Prefetch"},
		{"negative heartbeat", Config{URL: testURL, Heartbeat: -time.Second}, "Heartbeat"},
		{"sub-second heartbeat", Config{URL: testURL, Heartbeat: time.Millisecond}, "Heartbeat"},
		{"negative confirm timeout", Config{URL: testURL, ConfirmTimeout: -1}, "ConfirmTimeout"},
		{"min above max", Config{URL: testURL, ReconnectMin: time.Minute, ReconnectMax: time.Second}, "ReconnectMin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cfg.withDefaults()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("withDefaults(%+v) error = %v, want ErrInvalidConfig", tt.cfg, err)
			}
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tt.setting)) {
				t.Errorf("withDefaults() error = %q, want it to name %s", err, tt.setting)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("withDefaults() error = %q leaks the password", err)
			}
		})
	}
}

func TestTopologyValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		topo Topology
		ok   bool
	}{
		{"empty", Topology{}, true},
		{"full", Topology{
			Exchanges: []Exchange{{Name: "x", Kind: "topic"}},
			Queues:    []Queue{{Name: "q", Quorum: true, SingleActiveConsumer: true, DeadLetterExchange: "dlx", DeliveryLimit: 5}},
			Bindings:  []Binding{{Queue: "q", Exchange: "x", Key: "#"}},
		}, true},
		{"default exchange", Topology{Exchanges: []Exchange{{Kind: "direct"}}}, false},
		{"no kind", Topology{Exchanges: []Exchange{{Name: "x"}}}, false},
		{"unnamed queue", Topology{Queues: []Queue{{}}}, false},
		{"delivery limit on classic", Topology{Queues: []Queue{{Name: "q", DeliveryLimit: 3}}}, false},
		{"negative delivery limit", Topology{Queues: []Queue{{Name: "q", Quorum: true, DeliveryLimit: -1}}}, false},
		{"binding without queue", Topology{Bindings: []Binding{{Exchange: "x"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.topo.validate()
			if (err == nil) != tt.ok {
				t.Errorf("validate() = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("validate() = %v, want it to wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestQueueArgs(t *testing.T) {
	t.Parallel()
	got := Queue{Name: "q", Quorum: true, SingleActiveConsumer: true, DeadLetterExchange: "dlx", DeliveryLimit: 5}.args()
	want := map[string]any{"x-queue-type": "quorum", "x-single-active-consumer": true, "x-dead-letter-exchange": "dlx", "x-delivery-limit": 5}
	if fmt.Sprint(map[string]any(got)) != fmt.Sprint(want) {
		t.Errorf("args() = %v, want %v", got, want)
	}
	if got := (Queue{Name: "q"}).args(); len(got) != 0 {
		t.Errorf("args() of a plain queue = %v, want none", got)
	}
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	const lo, hi = 200 * time.Millisecond, 30 * time.Second
	tests := []struct {
		attempt int
		ceil    time.Duration
	}{
		{0, 200 * time.Millisecond},
		{1, 400 * time.Millisecond},
		{3, 1600 * time.Millisecond},
		{7, 25600 * time.Millisecond},
		{8, hi},
		{100, hi},
		{1 << 20, hi},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.attempt), func(t *testing.T) {
			var maxSeen time.Duration
			for range 2000 {
				d := backoff(lo, hi, tt.attempt)
				if d < 0 || d > tt.ceil {
					t.Fatalf("backoff(%s, %s, %d) = %s, want within [0, %s]", lo, hi, tt.attempt, d, tt.ceil)
				}
				maxSeen = max(maxSeen, d)
			}
			// Full jitter: the upper half of the range is used too.
			if maxSeen < tt.ceil/2 {
				t.Errorf("backoff(%s, %s, %d) never exceeded %s in 2000 draws, want jitter up to %s", lo, hi, tt.attempt, maxSeen, tt.ceil)
			}
		})
	}
}

func TestPoison(t *testing.T) {
	t.Parallel()
	base := errors.New("bad json")
	tests := []struct {
		name   string
		err    error
		poison bool
	}{
		{"nil", nil, false},
		{"plain", base, false},
		{"poison", Poison(base), true},
		{"wrapped poison", fmt.Errorf("decode change: %w", Poison(base)), true},
		{"joined", errors.Join(errors.New("x"), Poison(base)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsPoison(tt.err); got != tt.poison {
				t.Errorf("IsPoison(%v) = %v, want %v", tt.err, got, tt.poison)
			}
		})
	}
	if Poison(nil) != nil {
		t.Errorf("Poison(nil) = %v, want nil", Poison(nil))
	}
	p := Poison(base)
	if p.Error() != "bad json" || !errors.Is(p, base) {
		t.Errorf("Poison(%v) = %q, want same text and to wrap it", base, p)
	}
}

func TestNewRegistersMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := New(Config{URL: testURL, ConnectionName: "a"}, Topology{}, nil, reg); err != nil {
		t.Fatalf("New() error = %v", err)
	}
	if _, err := New(Config{URL: testURL, ConnectionName: "b"}, Topology{}, nil, reg); err != nil {
		t.Errorf("New() second client with another name error = %v, want nil", err)
	}
	if _, err := New(Config{URL: testURL, ConnectionName: "a"}, Topology{}, nil, reg); err == nil {
		t.Errorf("New() with a duplicate connection name on one registry = nil error, want a registration error")
	}
	if _, err := New(Config{URL: testURL}, Topology{}, nil, nil); err != nil {
		t.Errorf("New() with nil registry error = %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	want := "scsync_amqp_blocked scsync_amqp_connected scsync_amqp_consumed_total scsync_amqp_publish_failures_total scsync_amqp_published_total scsync_amqp_reconnects_total"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("registered metrics = %s, want %s", got, want)
	}
}

func TestReadyBeforeRun(t *testing.T) {
	t.Parallel()
	c, err := New(Config{URL: testURL}, Topology{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Ready() = %v, want ErrNotConnected", err)
	}
	if c.Blocked() {
		t.Errorf("Blocked() = true, want false")
	}
}

func testGauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}
