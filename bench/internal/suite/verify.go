package suite

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
	"github.com/scsync/scsync/shared/records"
)

// Verify measures sc-local's anti-entropy over equal sides (docs/verify.md).
var Verify = Bench{
	Name: "verify",
	Doc:  "POST /v1/verify over N records equal on both sides (imported, then backfilled to the cloud): wall time and sc-local's peak anonymous memory (RssAnon, sampled; VmHWM alongside) during the run, vs the issue's budget (30 s, 100 MB at a million records)",
	Flags: func(fs *flag.FlagSet) RunFunc {
		n := fs.Int("records", 1_000_000, "records on both sides (1% patients, the rest studies)")
		chunk := fs.Int("chunk", 20_000, "records per POST /v1/import")
		wait := fs.Duration("sync-timeout", 30*time.Minute, "give up when the cloud has not received every record by then")
		return func(ctx context.Context, c Config) ([]results.Result, error) {
			return runVerify(ctx, c, *n, *chunk, *wait)
		}
	},
}

// Budgets of issue 16 at a million records.
const (
	verifyBudgetSeconds = 30
	verifyBudgetMiB     = 100
)

func runVerify(ctx context.Context, c Config, n, chunk int, wait time.Duration) ([]results.Result, error) {
	var cl stack.Cleanup
	defer cl.Close()
	// No periodic run during the benchmark; only the one it times.
	a, err := stack.NewAppliance(ctx, &cl, c.Env, c.Bin, "verify")
	if err != nil {
		return nil, err
	}
	clinic, err := a.Enroll(ctx, "Bench Verify Dental")
	if err != nil {
		return nil, err
	}
	if err := a.StartLocal(ctx, clinic, "SC_LOCAL_VERIFY_EVERY=0"); err != nil {
		return nil, err
	}
	// Imported outside the scope, then the scope widened: the backfill is
	// the fastest way to get N records to both sides.
	if err := stack.Call(ctx, http.MethodPut, clinic.Base+"/v1/scope", "", map[string]any{"kinds": []string{"setting"}}, nil, http.StatusOK); err != nil {
		return nil, err
	}
	patients := max(n/100, 1)
	var pids []string
	for i := 0; i < patients; i += chunk {
		lines := make([]importLine, 0, chunk)
		for j := i; j < min(i+chunk, patients); j++ {
			lines = append(lines, importLine{Kind: "patient", Data: records.Sample("patient", j, nil)})
		}
		got, err := importRecords(ctx, clinic.Base, lines)
		if err != nil {
			return nil, err
		}
		pids = append(pids, got...)
	}
	for i := 0; i < n-patients; i += chunk {
		lines := make([]importLine, 0, chunk)
		for j := i; j < min(i+chunk, n-patients); j++ {
			date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -(j*7919)%3650).Format(time.DateOnly)
			lines = append(lines, importLine{Kind: "study", Data: studyContent(pids[j%len(pids)], date, j)})
		}
		if _, err := importRecords(ctx, clinic.Base, lines); err != nil {
			return nil, err
		}
	}
	if err := stack.Call(ctx, http.MethodPut, clinic.Base+"/v1/scope", "", map[string]any{}, nil, http.StatusOK); err != nil {
		return nil, err
	}
	deadline, lastLog := time.Now().Add(wait), time.Time{}
	for {
		head, err := cloudHead(ctx, a.Cloud, clinic)
		if err != nil {
			return nil, err
		}
		if head >= int64(n) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("verify: the cloud has %d of %d records after %s", head, n, wait)
		}
		if time.Since(lastLog) > 15*time.Second {
			c.Log.Info("waiting for the backfill", "synced", head, "of", n)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	// The down path's acceptances settle before the run (else records are
	// "on their way" and not compared).
	var rep struct {
		Records  int     `json:"records"`
		InFlight int     `json:"in_flight"`
		Equal    bool    `json:"equal"`
		Seconds  float64 `json:"seconds"`
	}
	for {
		var st struct {
			Pending int64 `json:"pending"`
			Outbox  int64 `json:"outbox"`
		}
		if err := stack.Call(ctx, http.MethodGet, clinic.Base+"/v1/status", "", nil, &st, http.StatusOK); err != nil {
			return nil, err
		}
		if st.Pending == 0 && st.Outbox == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("verify: %d records still pending", st.Pending)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	pid := clinic.Proc.Pid()
	_ = os.WriteFile(filepath.Join("/proc", fmt.Sprint(pid), "clear_refs"), []byte("5"), 0) // reset VmHWM
	u0, err := stack.ReadUsage(pid)
	if err != nil {
		return nil, err
	}
	// RssAnon has no high-water mark: sample it (and the cloud's) during
	// the run.
	sctx, stopSampling := context.WithCancel(ctx)
	peaks := make(chan [2]int64, 1)
	go func() {
		var peak [2]int64
		defer func() { peaks <- peak }()
		for {
			for i, p := range []int{pid, a.CloudProc.Pid()} {
				if u, err := stack.ReadUsage(p); err == nil {
					peak[i] = max(peak[i], u.AnonRSS)
				}
			}
			select {
			case <-sctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t0 := time.Now()
	// Longer than the usual 2-minute bound: the run is timed, not bounded.
	vctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	err = stack.Call(vctx, http.MethodPost, clinic.Base+"/v1/verify", "", nil, &rep, http.StatusOK)
	cancel()
	took := time.Since(t0)
	stopSampling()
	peak := <-peaks
	if err != nil {
		return nil, err
	}
	u1, err := stack.ReadUsage(pid)
	if err != nil {
		return nil, err
	}
	if !rep.Equal || rep.Records != n {
		return nil, fmt.Errorf("verify: report %+v, want %d equal records", rep, n)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	c.Log.Info("verify measured", "seconds", took.Seconds(), "peak_anon_mib", mib(peak[0]), "vmhwm_mib", mib(u1.PeakRSS),
		"cloud_peak_anon_mib", mib(peak[1]), "loadavg", strings.TrimSpace(string(load)))
	params := map[string]any{"records": n, "in_flight": rep.InFlight}
	secs := results.New("verify", "verify_equal_seconds", "s", results.LowerBetter, round3(took.Seconds()), verifyBudgetSeconds)
	secs.Note = "wall time of POST /v1/verify (report only) over equal sides; baseline: the budget (30 s at a million records)"
	secs.Extra = map[string]float64{"ours_cpu_seconds": round3((u1.CPU - u0.CPU).Seconds())}
	// sc-local logs where the time went: its own scan and the cloud's
	// answer (the cloud's scan).
	for _, part := range []string{"scan_seconds", "cloud_seconds"} {
		if m := regexp.MustCompile(part+`[=":]+([0-9.]+)`).FindAllStringSubmatch(clinic.Proc.Output(), -1); len(m) > 0 {
			if v, err := strconv.ParseFloat(m[len(m)-1][1], 64); err == nil {
				secs.Extra[part] = round3(v)
			}
		}
	}
	c.Log.Info("verify parts", "extra", secs.Extra)
	anon := results.New("verify", "verify_peak_anon", "MiB", results.LowerBetter, mib(peak[0]), verifyBudgetMiB)
	anon.Note = "sc-local's peak RssAnon (its heap and stacks, sampled every 20 ms) during the run: the figure the 100 MB budget is held to; " +
		"VmHWM adds the pages of the SQLite file it maps (mmap_size 256 MiB), which the kernel can drop and re-read"
	anon.Extra = map[string]float64{"ours_vmhwm_mib": mib(u1.PeakRSS), "ours_rss_before_mib": mib(u0.RSS), "ours_anon_before_mib": mib(u0.AnonRSS),
		"cloud_peak_anon_mib": mib(peak[1])}
	secs.Params, anon.Params = params, params
	return []results.Result{secs, anon}, nil
}
