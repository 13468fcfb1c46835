package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// importLines posts records to sc-local's bulk import (NDJSON) and returns
// their ids in order.
func importLines(t *testing.T, base string, lines []map[string]any) []string {
	t.Helper()
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/v1/import", &body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Authorization", "Bearer "+localAPIToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		Imported int      `json:"imported"`
		IDs      []string `json:"ids"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("import: %d %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("import answer %q: %v", b, err)
	}
	if out.Imported != len(lines) || len(out.IDs) != len(lines) {
		t.Fatalf("imported %d (%d ids) of %d", out.Imported, len(out.IDs), len(lines))
	}
	return out.IDs
}

// feedChange is one change of the cloud's feed as this test reads it.
type feedChange struct {
	CloudSeq  int64           `json:"cloud_seq"`
	Kind      string          `json:"kind"`
	RecordID  string          `json:"record_id"`
	ChangeID  string          `json:"change_id"`
	Payload   json.RawMessage `json:"payload"`
	StudyDate string          `json:"-"`
}

// cloudFeed reads the clinic's whole change feed from the cloud.
func cloudFeed(t *testing.T, cloud side) []feedChange {
	t.Helper()
	var all []feedChange
	since := int64(0)
	for {
		var page struct {
			Changes []feedChange `json:"changes"`
			Next    int64        `json:"next"`
			More    bool         `json:"more"`
		}
		if code := call(t, "GET", cloud.prefix+"changes?limit=5000&since="+strconv.FormatInt(since, 10), cloud.token, nil, &page); code != 200 {
			t.Fatalf("cloud feed: %d", code)
		}
		for i := range page.Changes {
			var d struct {
				StudyDate string `json:"study_date"`
			}
			_ = json.Unmarshal(page.Changes[i].Payload, &d)
			page.Changes[i].StudyDate = d.StudyDate
		}
		all = append(all, page.Changes...)
		if !page.More || page.Next <= since {
			return all
		}
		since = page.Next
	}
}

// TestBackfillHundredThousand (M8, issue 6): a clinic with 100,000 records
// over five years and a few hundred image files connects to the cloud. The
// backfill sends them newest first (checked on the order the cloud received
// them), live edits made meanwhile overtake it, a SIGKILL of sc-local midway
// resumes where it stopped (nothing sent twice), and every file arrives.
func TestBackfillHundredThousand(t *testing.T) {
	parallelLong(t)
	start := time.Now()
	s := newStackWith(t, stackOpts{cloudNodes: 1, fast: true})
	c := s.enroll(t, "Jeonju Ten-Year Dental")
	dir := t.TempDir()
	// The clinic's history is imported while its link to the broker is
	// down, so the backfill has all of it ahead when the clinic connects
	// (a backfill as fast as the import would otherwise be over before the
	// live edit below, and the test would prove nothing).
	amqpURL, link := viaProxy(t, s.amqpURL)
	s.startLocalVia(t, c, dir, amqpURL, s.cloud[len(s.cloud)-1])
	link.Cut()
	cloud := cloudSide(s.cloud[0], c)

	// The clinic's history: 2,000 patients, 24,500 studies over five years,
	// two images and a report per study (100,000 records in all); 300 of
	// the images have their original file on disk.
	const patients, studies, withFiles = 2000, 24500, 300
	var lines []map[string]any
	for i := range patients {
		lines = append(lines, map[string]any{"kind": "patient", "data": map[string]any{"name": fmt.Sprintf("Patient %05d", i), "chart_no": strconv.Itoa(i)}})
	}
	pids := importLines(t, c.base, lines)
	day0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	dateOf := func(i int) string { return day0.AddDate(0, 0, -(i*7919)%(5*365+30)).Format(time.DateOnly) }
	lines = lines[:0]
	for i := range studies {
		lines = append(lines, map[string]any{"kind": "study", "data": map[string]any{"patient_id": pids[i%patients], "study_date": dateOf(i), "description": fmt.Sprintf("visit %d", i)}})
	}
	sids := importLines(t, c.base, lines)
	fileDir := filepath.Join(t.TempDir(), "pacs")
	if err := os.MkdirAll(fileDir, 0o750); err != nil {
		t.Fatal(err)
	}
	type file struct{ path, sha string }
	var files []file
	lines = lines[:0]
	for i := range studies {
		for j, mod := range []string{"PANO", "CBCT"} {
			img := map[string]any{"study_id": sids[i], "modality": mod, "study_date": dateOf(i), "file_name": fmt.Sprintf("%d-%d.dcm", i, j)}
			if j == 0 && i%(studies/withFiles) == 0 && len(files) < withFiles {
				b := make([]byte, 2048+len(files)*13)
				_, _ = rand.Read(b)
				sum := sha256.Sum256(b)
				p := filepath.Join(fileDir, fmt.Sprintf("%d.dcm", i))
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
				files = append(files, file{p, hex.EncodeToString(sum[:])})
				img["sha256"], img["size"] = hex.EncodeToString(sum[:]), len(b)
			}
			lines = append(lines, map[string]any{"kind": "image", "data": img})
		}
		lines = append(lines, map[string]any{"kind": "report", "data": map[string]any{"study_id": sids[i], "title": "Findings", "status": "final"}})
	}
	// The last part goes through the CLI clinic IT uses: sc-local import.
	ndjson := filepath.Join(t.TempDir(), "history.ndjson")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(ndjson, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.localBin, "import", ndjson)
	cmd.Env = append(os.Environ(), c.proc.env...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("imported %d records", len(lines))) {
		t.Fatalf("sc-local import: %v\n%s", err, out)
	}
	total := patients + studies*4
	t.Logf("%s: imported %d records, %d with files", time.Since(start).Round(time.Second), total, len(files))
	for _, f := range files {
		if code := call(t, "POST", c.base+"/v1/files", "", map[string]any{"path": f.path}, nil); code != 202 {
			t.Fatalf("import file %s: %d", f.path, code)
		}
	}

	var bf struct {
		Remaining int64 `json:"remaining"`
		Queued    int64 `json:"queued"`
	}
	backfill := func() {
		if code := call(t, "GET", c.base+"/v1/backfill", "", nil, &bf); code != 200 {
			t.Fatalf("backfill progress: %d", code)
		}
	}
	// The backfill counts the imported history (sc-local import is another
	// process: the server recounts its remaining work within 30 s), then
	// the clinic connects. Live edits made while the backfill runs reach
	// the cloud before it ends.
	testenv.CheckFor(t, 2*time.Minute, 200*time.Millisecond, func() error {
		backfill()
		if bf.Remaining < int64(total)/2 {
			return fmt.Errorf("the backfill has not counted the import yet: %+v", bf)
		}
		return nil
	})
	link.Restore()
	testenv.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		backfill()
		if bf.Queued == 0 {
			return fmt.Errorf("backfill has not started: %+v", bf)
		}
		return nil
	})
	var live patient
	posted := time.Now()
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Walk-in During Backfill"}), &live); code != 201 {
		t.Fatalf("live create: %d", code)
	}
	// The check below (records still to backfill when it arrives) proves
	// the live edit overtook the backfill; the bound, that it waited behind
	// no more than the backfill's window of unacknowledged changes (7 s at
	// a load of 28 on 2 cores; docs/scope.md).
	testenv.CheckFor(t, time.Minute, 100*time.Millisecond, func() error {
		if code := call(t, "GET", cloud.prefix+"patients/"+live.ID, c.person, nil, nil); code != 200 {
			return fmt.Errorf("live patient not in the cloud yet (%d)", code)
		}
		return nil
	})
	backfill()
	if bf.Remaining == 0 {
		t.Fatalf("the backfill finished before the live edit arrived; the test proves nothing (%+v)", bf)
	}
	t.Logf("%s: live edit in the cloud %s after its save, with %d records still to backfill", time.Since(start).Round(time.Second),
		time.Since(posted).Round(100*time.Millisecond), bf.Remaining)

	// SIGKILL midway; the restart continues from where it stopped.
	testenv.CheckFor(t, 5*time.Minute, 200*time.Millisecond, func() error {
		backfill()
		if bf.Remaining > int64(total)/2 {
			return fmt.Errorf("backfill at %d remaining", bf.Remaining)
		}
		return nil
	})
	before := bf.Remaining
	c.proc.kill9(t)
	c.proc.restart(t)
	waitReady(t, c.proc, c.base)
	backfill()
	// Progress figures are sampled, so allow a batch or two of slack; a
	// backfill that started over would show the whole history again.
	if bf.Remaining > before+1000 {
		t.Fatalf("after the restart %d remain, %d did before the kill: the backfill started over", bf.Remaining, before)
	}
	t.Logf("%s: killed with %d remaining, %d remain after the restart", time.Since(start).Round(time.Second), before, bf.Remaining)

	converged(t, c, cloud, 8*time.Minute)
	t.Logf("%s: converged", time.Since(start).Round(time.Second))

	// The cloud received every record once, and the history newest first.
	feed := cloudFeed(t, cloud)
	seen := map[string]int{}
	last := "9999-12-31"
	dated := 0
	for _, ch := range feed {
		seen[ch.Kind+"/"+ch.RecordID]++
		if ch.Kind != "study" || ch.StudyDate == "" {
			continue
		}
		dated++
		if ch.StudyDate > last {
			t.Fatalf("the cloud received a study of %s after one of %s: not newest first", ch.StudyDate, last)
		}
		last = ch.StudyDate
	}
	if dated != studies {
		t.Fatalf("%d studies reached the cloud, want %d", dated, studies)
	}
	for k, n := range seen {
		if n != 1 && k != "patient/"+live.ID {
			t.Fatalf("%s reached the cloud %d times", k, n)
		}
	}
	if len(seen) != total+1 {
		t.Fatalf("%d records reached the cloud, want %d", len(seen), total+1)
	}
	// Every file is in the cloud, verified.
	testenv.CheckFor(t, 3*time.Minute, time.Second, func() error {
		for _, f := range files {
			var st struct {
				State string `json:"state"`
			}
			if code := call(t, "GET", cloud.prefix+"files/"+f.sha, c.Token, nil, &st); code != 200 || st.State != "present" {
				return fmt.Errorf("file %s: %d %s", f.sha, code, st.State)
			}
		}
		return nil
	})
}
