package suite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
	"github.com/scsync/scsync/bench/internal/stats"
	"github.com/scsync/scsync/shared/records"
)

// Backfill measures the newest-first backfill of a clinic's history.
var Backfill = Bench{
	Name: "backfill",
	Doc:  "N records imported on sc-local outside the scope, then the scope widened: enumerated and synced newest first, vs a bare SQLite ORDER BY date DESC → publish with confirms → PostgreSQL batch insert",
	Flags: func(fs *flag.FlagSet) RunFunc {
		n := fs.Int("records", 1_000_000, "records imported (1% patients, the rest studies over ten years)")
		chunk := fs.Int("chunk", 20_000, "records per POST /v1/import")
		wait := fs.Duration("sync-timeout", 9*time.Minute, "stop waiting for the cloud after this long and report the rate so far")
		baseN := fs.Int("baseline-records", 300_000, "records of the bare baseline, at most as many as the cloud received (0: all of those); its rate hardly depends on the count, and a million would add a minute to make bench")
		prof := fs.String("cpuprofile", "", "write CPU profiles of sc-local (this file) and sc-cloud (this file + .cloud) over the first 30 s of the backfill (go tool pprof), and their logs beside")
		return func(ctx context.Context, c Config) ([]results.Result, error) {
			return runBackfill(ctx, c, *n, *chunk, *wait, *baseN, *prof)
		}
	},
}

// importLine is one NDJSON line of POST /v1/import.
type importLine struct {
	Kind string          `json:"kind"`
	Data records.Content `json:"data"`
}

type backfillFigures struct {
	importRate  float64
	enumerated  int64
	enumSeconds float64
	synced      int64
	syncSeconds float64
	complete    bool
	peakRSS     int64
	cpu         time.Duration
	cloudCPU    time.Duration
}

func runBackfill(ctx context.Context, c Config, n, chunk int, wait time.Duration, baseN int, prof string) ([]results.Result, error) {
	ours, err := oursBackfill(ctx, c, n, chunk, wait, prof)
	if err != nil {
		return nil, err
	}
	if baseN == 0 || int64(baseN) > ours.synced {
		baseN = int(ours.synced)
	}
	baseRate, err := bareBackfill(ctx, c, baseN)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	syncRate := stats.Rate(ours.synced, time.Duration(ours.syncSeconds*float64(time.Second)))
	r := results.New("backfill", "backfill_throughput", "records/s", results.HigherBetter, round1(syncRate), round1(baseRate))
	r.Params = map[string]any{"records_imported": n, "records_synced": ours.synced, "fully_synced": ours.complete,
		"sync_timeout_s": wait.Seconds(), "baseline_records": baseN, "import_chunk": chunk}
	r.Extra = map[string]float64{
		"ours_import_rate":         round1(ours.importRate),
		"ours_enumerated":          float64(ours.enumerated),
		"ours_enumeration_seconds": round3(ours.enumSeconds),
		"ours_enumeration_rate":    round1(stats.Rate(ours.enumerated, time.Duration(ours.enumSeconds*float64(time.Second)))),
		"ours_sync_seconds":        round3(ours.syncSeconds),
		"ours_peak_rss_mib":        mib(ours.peakRSS),
		"ours_cpu_seconds":         round3(ours.cpu.Seconds()),
		"ours_cloud_cpu_seconds":   round3(ours.cloudCPU.Seconds()),
	}
	r.Note = "ours: from widening the scope (PUT /v1/scope) until the cloud's change feed head reaches the records synced (enumerated: queued by the backfill, GET /v1/backfill); " +
		"baseline: baseline_records rows (as many as ours, up to -baseline-records) enumerated from SQLite ORDER BY date DESC, published with confirms, batch-inserted into PostgreSQL"
	return []results.Result{r}, nil
}

func oursBackfill(ctx context.Context, c Config, n, chunk int, wait time.Duration, prof string) (backfillFigures, error) {
	var f backfillFigures
	var cl stack.Cleanup
	defer cl.Close()
	var extra []string
	if prof != "" {
		extra = append(extra, "SCSYNC_PPROF=1")
	}
	if lvl := os.Getenv("BENCH_CLOUD_LOG_LEVEL"); lvl != "" {
		extra = append(extra, "SC_CLOUD_LOG_LEVEL="+lvl) // with -cpuprofile, the log is kept beside the profiles
	}
	a, err := stack.NewAppliance(ctx, &cl, c.Env, c.Bin, "backfill", extra...)
	if err != nil {
		return f, err
	}
	if prof != "" {
		defer func() { _ = os.WriteFile(prof+".cloud.log", []byte(a.CloudProc.Output()), 0o644) }()
	}
	clinic, err := a.Enroll(ctx, "Bench Backfill Dental")
	if err != nil {
		return f, err
	}
	if err := a.StartLocal(ctx, clinic, extra...); err != nil {
		return f, err
	}
	if prof != "" {
		defer func() { _ = os.WriteFile(prof+".local.log", []byte(clinic.Proc.Output()), 0o644) }()
	}
	// History first, outside the scope: nothing syncs while it is imported.
	if err := stack.Call(ctx, http.MethodPut, clinic.Base+"/v1/scope", "", map[string]any{"kinds": []string{"setting"}}, nil, http.StatusOK); err != nil {
		return f, err
	}
	patients := max(n/100, 1)
	t0 := time.Now()
	var pids []string
	for i := 0; i < patients; i += chunk {
		lines := make([]importLine, 0, chunk)
		for j := i; j < min(i+chunk, patients); j++ {
			lines = append(lines, importLine{Kind: "patient", Data: records.Sample("patient", j, nil)})
		}
		got, err := importRecords(ctx, clinic.Base, lines)
		if err != nil {
			return f, err
		}
		pids = append(pids, got...)
	}
	studies := n - patients
	for i := 0; i < studies; i += chunk {
		lines := make([]importLine, 0, chunk)
		for j := i; j < min(i+chunk, studies); j++ {
			date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -(j*7919)%3650).Format(time.DateOnly)
			lines = append(lines, importLine{Kind: "study", Data: studyContent(pids[j%len(pids)], date, j)})
		}
		if _, err := importRecords(ctx, clinic.Base, lines); err != nil {
			return f, err
		}
		c.Log.Debug("imported", "records", patients+min(i+chunk, studies))
	}
	f.importRate = stats.Rate(int64(n), time.Since(t0))
	c.Log.Info("history imported", "records", n, "rate", int(f.importRate))

	pid := clinic.Proc.Pid()
	_ = os.WriteFile(filepath.Join("/proc", fmt.Sprint(pid), "clear_refs"), []byte("5"), 0)
	u0, err := stack.ReadUsage(pid)
	if err != nil {
		return f, err
	}
	cu0, err := stack.ReadUsage(a.CloudProc.Pid())
	if err != nil {
		return f, err
	}
	start := time.Now()
	if err := stack.Call(ctx, http.MethodPut, clinic.Base+"/v1/scope", "", map[string]any{}, nil, http.StatusOK); err != nil {
		return f, err
	}
	profDone := make(chan error, 2)
	if prof != "" {
		go func() { profDone <- cpuProfile(ctx, clinic.Base, stack.LocalAPIToken, prof, 30*time.Second) }()
		go func() { profDone <- cpuProfile(ctx, a.Cloud, a.AdminToken, prof+".cloud", 30*time.Second) }()
	} else {
		profDone <- nil
		profDone <- nil
	}
	deadline := start.Add(wait)
	var lastLog time.Time
	for {
		var bp struct {
			Remaining int64 `json:"remaining"`
			Queued    int64 `json:"queued"`
		}
		if err := stack.Call(ctx, http.MethodGet, clinic.Base+"/v1/backfill", "", nil, &bp, http.StatusOK); err != nil {
			return f, err
		}
		if bp.Queued > f.enumerated {
			f.enumerated, f.enumSeconds = bp.Queued, time.Since(start).Seconds()
		}
		head, err := cloudHead(ctx, a.Cloud, clinic)
		if err != nil {
			return f, err
		}
		if head > f.synced {
			f.synced, f.syncSeconds = head, time.Since(start).Seconds()
		}
		if head >= int64(n) {
			f.complete = true
			break
		}
		if time.Now().After(deadline) {
			c.Log.Warn("backfill not finished: reporting the rate so far", "synced", head, "of", n, "enumerated", bp.Queued)
			break
		}
		if time.Since(lastLog) > 15*time.Second {
			c.Log.Info("backfill progress", "enumerated", bp.Queued, "remaining", bp.Remaining, "synced", head)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return f, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	u1, err := stack.ReadUsage(pid)
	if err != nil {
		return f, err
	}
	cu1, err := stack.ReadUsage(a.CloudProc.Pid())
	if err != nil {
		return f, err
	}
	f.peakRSS, f.cpu, f.cloudCPU = u1.PeakRSS, u1.CPU-u0.CPU, cu1.CPU-cu0.CPU
	for range 2 {
		if err := <-profDone; err != nil {
			c.Log.Warn("no CPU profile", "err", err)
		}
	}
	return f, nil
}

// cpuProfile saves a CPU profile of the server at base (SCSYNC_PPROF=1).
func cpuProfile(ctx context.Context, base, token, path string, d time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, int(d.Seconds())), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token) // the profiler is an admin route
	resp, err := stack.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: status %d", resp.StatusCode)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func studyContent(patient, date string, n int) records.Content {
	var s records.Study
	_ = json.Unmarshal(fmt.Appendf(nil, `{"patient_id":%q,"study_date":%q,"description":"Study %d","modality":"PANO"}`, patient, date, n), &s)
	return s
}

// importRecords posts lines as NDJSON to /v1/import and returns the ids.
func importRecords(ctx context.Context, base string, lines []importLine) ([]string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			return nil, err
		}
	}
	var out struct {
		Imported int      `json:"imported"`
		IDs      []string `json:"ids"`
	}
	if err := stack.CallRaw(ctx, http.MethodPost, base+"/v1/import", "", "application/x-ndjson", &buf, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Imported != len(lines) || len(out.IDs) != len(lines) {
		return nil, fmt.Errorf("import: %d imported, %d ids, want %d", out.Imported, len(out.IDs), len(lines))
	}
	return out.IDs, nil
}

func cloudHead(ctx context.Context, cloud string, c *stack.Clinic) (int64, error) {
	var page struct {
		Head int64 `json:"head"`
	}
	err := stack.Call(ctx, http.MethodGet, c.CloudPrefix(cloud)+"changes?limit=1", c.Token, nil, &page, http.StatusOK)
	return page.Head, err
}

// bareBackfill fills a SQLite table with n rows (untimed), then times:
// enumerate ORDER BY date DESC → publish with confirms → consume → batch
// insert into PostgreSQL.
func bareBackfill(ctx context.Context, c Config, n int) (float64, error) {
	var cl stack.Cleanup
	defer cl.Close()
	dir, err := os.MkdirTemp("", "scsync-bench-bare-backfill")
	if err != nil {
		return 0, err
	}
	cl.Add(func() { _ = os.RemoveAll(dir) })
	lite, err := sql.Open("sqlite", filepath.Join(dir, "bare.db"))
	if err != nil {
		return 0, err
	}
	defer lite.Close()
	if _, err := lite.ExecContext(ctx, `PRAGMA journal_mode=WAL; CREATE TABLE studies (id INTEGER PRIMARY KEY, study_date TEXT NOT NULL, data TEXT NOT NULL); CREATE INDEX studies_date ON studies (study_date)`); err != nil {
		return 0, err
	}
	tx, err := lite.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO studies (id, study_date, data) VALUES (?, ?, ?)`)
	if err != nil {
		_ = tx.Rollback()
		return 0, err
	}
	defer func() { _ = ins.Close() }()
	for j := range n {
		date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -(j*7919)%3650).Format(time.DateOnly)
		data, _ := json.Marshal(studyContent("1234567890", date, j))
		if _, err := ins.ExecContext(ctx, j+1, date, string(data)); err != nil {
			_ = tx.Rollback()
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}

	amqpURL, err := c.Env.Vhost(ctx, &cl, "bench_bare")
	if err != nil {
		return 0, err
	}
	pgURL, err := c.Env.PostgresDB(ctx, &cl, "bench_bare")
	if err != nil {
		return 0, err
	}
	db, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if err := bareTable(ctx, db); err != nil {
		return 0, err
	}
	b, err := dialBare(amqpURL, "bare.backfill")
	if err != nil {
		return 0, err
	}
	defer b.Close()
	var inserted atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	consErr := make(chan error, 1)
	go func() {
		consErr <- b.consume(cctx, 1000, 500, 5*time.Millisecond, func(rows []bareRow) error {
			if err := bareInsert(cctx, db, rows); err != nil {
				return err
			}
			if inserted.Add(int64(len(rows))) >= int64(n) {
				once.Do(func() { close(all) })
			}
			return nil
		})
	}()
	start := time.Now()
	rows, err := lite.QueryContext(ctx, `SELECT id, data FROM studies ORDER BY study_date DESC, id DESC`)
	if err != nil {
		return 0, err
	}
	defer func() { _ = rows.Close() }()
	const window = 256
	pending := make([]interface{ Wait() bool }, 0, window)
	drain := func() error {
		for _, p := range pending {
			if !p.Wait() {
				return fmt.Errorf("bare: publish nacked")
			}
		}
		pending = pending[:0]
		return nil
	}
	for rows.Next() {
		var id int64
		var data string
		if err := rows.Scan(&id, &data); err != nil {
			return 0, err
		}
		body, err := json.Marshal(bareRow{ID: id, Data: json.RawMessage(data)})
		if err != nil {
			return 0, err
		}
		dc, err := b.publish(ctx, body)
		if err != nil {
			return 0, err
		}
		if pending = append(pending, dc); len(pending) == window {
			if err := drain(); err != nil {
				return 0, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if err := drain(); err != nil {
		return 0, err
	}
	select {
	case <-all:
	case err := <-consErr:
		return 0, fmt.Errorf("bare consumer stopped: %w", err)
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("bare consumer inserted %d of %d", inserted.Load(), n)
	}
	// Not g.Wait: the consumer's channel close can wait on the library's
	// reader; the deferred connection close ends both.
	return stats.Rate(int64(n), time.Since(start)), nil
}
