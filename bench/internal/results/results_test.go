package results

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestRatio(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ours, base, want float64
	}{
		{50, 100, 0.5},
		{100, 30, 3.333},
		{1, 0, 0},
		{0, 5, 0},
	}
	for _, tt := range tests {
		if got := Ratio(tt.ours, tt.base); got != tt.want {
			t.Errorf("Ratio(%v, %v) = %v, want %v", tt.ours, tt.base, got, tt.want)
		}
	}
}

func TestNum(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   float64
		want string
	}{
		{0, "0"}, {1234.6, "1235"}, {12.34, "12.3"}, {1.234, "1.23"}, {0.01234, "0.012"}, {-150, "-150"},
	}
	for _, tt := range tests {
		if got := Num(tt.in); got != tt.want {
			t.Errorf("Num(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteReadTable(t *testing.T) {
	t.Parallel()
	r := New("replication", "replication_throughput", "records/s", HigherBetter, 500, 2000)
	r.OursLatency = &Latency{P50: 1.5, P99: 12, Count: 10}
	r.Params = map[string]any{"records": 1000}
	f := File{Machine: ThisMachine(), Results: []Result{r, New("idle", "idle_rss", "MiB", LowerBetter, 30, 0)}}
	path := filepath.Join(t.TempDir(), "sub", "results.json")
	if err := Write(path, f); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(got.Results) != 2 || got.Results[0].Ratio != 0.25 || got.Results[0].OursLatency.P99 != 12 {
		t.Fatalf("Read(Write(f)) = %+v", got.Results)
	}
	var b bytes.Buffer
	if err := Table(&b, got.Results); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"replication_throughput", "0.25", "1.50 / 12.0", "idle_rss"} {
		if !strings.Contains(out, want) {
			t.Errorf("Table output lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := Markdown(&b, got.Results); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(b.String(), "\n"); lines != 4 {
		t.Errorf("Markdown wrote %d lines, want 4:\n%s", lines, b.String())
	}
}

func TestBar(t *testing.T) {
	t.Parallel()
	cpu := New("scale", "scale_broker_idle_cpu", "% of a core", LowerBetter, 12, 1)
	cpu.WithBar(10, "10000 clinics")
	rate := New("scale", "rate", "records/s", HigherBetter, 100, 0)
	rate.WithBar(100, "")
	lat := New("scale", "lat", "ms", LowerBetter, 40, 0)
	lat.WithBar(100, "")
	if cpu.Bar.Pass || !rate.Bar.Pass || !lat.Bar.Pass {
		t.Fatalf("verdicts: cpu %v rate %v lat %v, want false true true", cpu.Bar.Pass, rate.Bar.Pass, lat.Bar.Pass)
	}
	rs := []Result{cpu, rate, lat, New("idle", "idle_rss", "MiB", LowerBetter, 30, 0)}
	var b bytes.Buffer
	if err := Table(&b, rs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"< 10.0 FAIL (bar at 10000 clinics)", ">= 100 pass", "< 100 pass", "bar"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("Table output lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := Table(&b, rs[3:]); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "bar") {
		t.Errorf("Table without bars has a bar column:\n%s", b.String())
	}
	b.Reset()
	if err := Markdown(&b, rs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| < 10.0 FAIL (bar at 10000 clinics) |") {
		t.Errorf("Markdown lacks the bar:\n%s", b.String())
	}
}
