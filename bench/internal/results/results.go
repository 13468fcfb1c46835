// Package results holds what a benchmark measured — our figure, the
// baseline's, their ratio — and writes it as bench/results.json and as a
// table for people.
package results

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Which way is better for a figure.
const (
	HigherBetter = "higher"
	LowerBetter  = "lower"
)

// Latency is a p50/p99 pair in milliseconds.
type Latency struct {
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	// Count is the number of samples.
	Count int `json:"count"`
}

// Result is one measured figure of one benchmark against its baseline,
// both measured in the same run.
type Result struct {
	// Benchmark is the program that measured it (cmd/<benchmark>).
	Benchmark string `json:"benchmark"`
	// Name identifies the figure, unique within a run.
	Name string `json:"name"`
	// Ours is scsync's figure, Baseline the bare program's, in Unit.
	Ours     float64 `json:"ours"`
	Baseline float64 `json:"baseline"`
	Unit     string  `json:"unit"`
	// Ratio is Ours / Baseline; Better says whether a higher or a lower
	// figure (and so ratio) is better.
	Ratio  float64 `json:"ratio"`
	Better string  `json:"better"`
	// OursLatency and BaselineLatency are the percentiles where the figure
	// is a latency.
	OursLatency     *Latency `json:"ours_latency,omitempty"`
	BaselineLatency *Latency `json:"baseline_latency,omitempty"`
	// Params are the benchmark's parameters (sizes, rates, durations).
	Params map[string]any `json:"params,omitempty"`
	// Extra holds further measured figures of the same run (peak RSS, …).
	Extra map[string]float64 `json:"extra,omitempty"`
	// Note says what the baseline is and anything a reader must know.
	Note string `json:"note,omitempty"`
	// Bar, when set, is a limit the figure must stay within (an issue's
	// acceptance bar) and whether this run did.
	Bar *Bar `json:"bar,omitempty"`
}

// Bar is an upper (Better lower) or lower (Better higher) limit of a
// figure, in its unit.
type Bar struct {
	Limit float64 `json:"limit"`
	// At says where the bar is defined when that is not this run's size
	// (e.g. "10000 clinics").
	At   string `json:"at,omitempty"`
	Pass bool   `json:"pass"`
}

// WithBar sets r's bar at limit and whether Ours meets it: below it when
// lower is better, at or above it when higher is.
func (r *Result) WithBar(limit float64, at string) {
	pass := r.Ours < limit
	if r.Better == HigherBetter {
		pass = r.Ours >= limit
	}
	r.Bar = &Bar{Limit: limit, At: at, Pass: pass}
}

// New returns a result with its ratio computed.
func New(benchmark, name, unit, better string, ours, baseline float64) Result {
	return Result{Benchmark: benchmark, Name: name, Unit: unit, Better: better,
		Ours: ours, Baseline: baseline, Ratio: Ratio(ours, baseline)}
}

// Ratio is ours/baseline, rounded to 3 decimals; 0 when the baseline is 0.
func Ratio(ours, baseline float64) float64 {
	if baseline == 0 {
		return 0
	}
	return math.Round(ours/baseline*1000) / 1000
}

// File is the content of bench/results.json.
type File struct {
	Started     time.Time `json:"started"`
	WallSeconds float64   `json:"wall_seconds"`
	Machine     Machine   `json:"machine"`
	Results     []Result  `json:"results"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	MemoryGiB int    `json:"memory_gib,omitempty"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	Go        string `json:"go"`
	// Load1 is the 1-minute load average when the run ended: the machine
	// may be shared.
	Load1 string `json:"load1,omitempty"`
}

// ThisMachine reads what it can of the machine from /proc.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryGiB = int(math.Round(float64(kb) / (1 << 20)))
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.Load1 = f[0]
		}
	}
	return m
}

// Write writes f as indented JSON to path, creating its directory.
func Write(path string, f File) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("results: %w", err)
		}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return nil
}

// Read reads a results file.
func Read(path string) (File, error) {
	var f File
	b, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("results: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("results: %s: %w", path, err)
	}
	return f, nil
}

// Table writes rs as an aligned table: one line per figure, with a bar
// column when any figure has a bar.
func Table(w io.Writer, rs []Result) error {
	bars := anyBar(rs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "figure\tours\tbaseline\tunit\tratio\tbetter\tours p50/p99 ms\tbaseline p50/p99 ms"
	if bars {
		head += "\tbar"
	}
	fmt.Fprintln(tw, head)
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", r.Name, Num(r.Ours), Num(r.Baseline), r.Unit,
			ratioText(r), r.Better, latencyText(r.OursLatency), latencyText(r.BaselineLatency))
		if bars {
			fmt.Fprintf(tw, "\t%s", BarText(r.Bar, r.Better))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// Markdown writes rs as a Markdown table, as docs/performance.md shows it
// (with a bar column when any figure has a bar).
func Markdown(w io.Writer, rs []Result) error {
	bars := anyBar(rs)
	var b strings.Builder
	b.WriteString("| figure | ours | baseline | unit | ratio | better | ours p50 / p99 ms | baseline p50 / p99 ms |")
	if bars {
		b.WriteString(" bar |")
	}
	b.WriteString("\n|---|---:|---:|---|---:|---|---:|---:|")
	if bars {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |", r.Name, Num(r.Ours), Num(r.Baseline), r.Unit,
			ratioText(r), r.Better, latencyText(r.OursLatency), latencyText(r.BaselineLatency))
		if bars {
			fmt.Fprintf(&b, " %s |", BarText(r.Bar, r.Better))
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func anyBar(rs []Result) bool {
	for _, r := range rs {
		if r.Bar != nil {
			return true
		}
	}
	return false
}

// BarText is a bar and its verdict: "< 30 pass", ">= 100 FAIL (at 10000
// clinics)"; "-" without a bar.
func BarText(b *Bar, better string) string {
	if b == nil {
		return "-"
	}
	op := "<"
	if better == HigherBetter {
		op = ">="
	}
	verdict := "pass"
	if !b.Pass {
		verdict = "FAIL"
	}
	s := op + " " + Num(b.Limit) + " " + verdict
	if b.At != "" {
		s += " (bar at " + b.At + ")"
	}
	return s
}

func ratioText(r Result) string {
	if r.Baseline == 0 {
		return "-"
	}
	if math.Abs(r.Ratio) >= 100 {
		return fmt.Sprintf("%.0f", r.Ratio)
	}
	return fmt.Sprintf("%.3g", r.Ratio)
}

func latencyText(l *Latency) string {
	if l == nil {
		return "-"
	}
	return Num(l.P50) + " / " + Num(l.P99)
}

// Num formats v with about three significant digits, without exponents.
func Num(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
