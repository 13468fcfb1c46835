package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/libtnb/sqlite"
	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/antientropy"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/testenv"
)

type verifyReport struct {
	Records     int  `json:"records"`
	CloudCount  int  `json:"cloud_records"`
	Files       int  `json:"files"`
	Buckets     int  `json:"differing_buckets"`
	Equal       bool `json:"equal"`
	Differences []struct {
		Kind     string `json:"kind"`
		ID       string `json:"id"`
		SHA256   string `json:"sha256"`
		Side     string `json:"side"`
		What     string `json:"what"`
		Repair   string `json:"repair"`
		Repaired bool   `json:"repaired"`
		Error    string `json:"error"`
	} `json:"differences"`
}

func runVerify(t *testing.T, c *clinic, repair bool) verifyReport {
	t.Helper()
	url := c.base + "/v1/verify"
	if repair {
		url += "?repair=true"
	}
	var r verifyReport
	if code := call(t, "POST", url, "", nil, &r); code != 200 {
		t.Fatalf("verify: %d", code)
	}
	return r
}

// TestVerifyFindsAndRepairs (issue 16 #4): anti-entropy finds a clean stack
// equal; then, with a row edited directly in the clinic's SQLite, a row
// edited directly in the cloud's PostgreSQL and a tombstone's content
// changed in the cloud's PostgreSQL, it reports each difference (kind, id,
// which side, what), repairs each through replication, tells viewers, and
// the two sides converge again.
func TestVerifyFindsAndRepairs(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Suwon Verify Dental")
	dir := t.TempDir()
	s.startLocal(t, c, dir)
	cloud := cloudSide(s.cloud[0], c)

	ids := map[string]string{}
	for _, name := range []string{"Clinic drift", "Cloud drift", "Tomb drift", "Untouched"} {
		var p patient
		if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": name}), &p); code != 201 {
			t.Fatalf("create: %d", code)
		}
		ids[name] = p.ID
	}
	if code := call(t, "DELETE", c.base+"/v1/patients/"+ids["Tomb drift"], "", nil, nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	converged(t, c, cloud, 60*time.Second)
	if r := runVerify(t, c, false); !r.Equal || len(r.Differences) != 0 || r.Buckets != 0 || r.Records != 4 {
		t.Fatalf("verify of a clean stack = %+v, want 4 records equal", r)
	}

	// Divergence, injected behind the servers' backs.
	db, err := gorm.Open(sqlite.Open("file:"+filepath.Join(dir, "scsync.db")+"?_pragma=busy_timeout(10000)"), &gorm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("UPDATE patients SET name = 'Tampered here' WHERE id = ?", ids["Clinic drift"]).Error; err != nil {
		t.Fatal(err)
	}
	if sdb, err := db.DB(); err == nil {
		_ = sdb.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := pgx.Connect(ctx, s.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	for name, to := range map[string]string{"Cloud drift": "Tampered there", "Tomb drift": "Tampered tombstone"} {
		if _, err := pg.Exec(ctx, "UPDATE patients SET name = $1 WHERE clinic_id = $2 AND id = $3", to, c.ID, ids[name]); err != nil {
			t.Fatal(err)
		}
	}
	localEvents := watchEvents(t, c.base+"/v1/events", "")

	r := runVerify(t, c, false)
	want := map[string]string{ // id → side/what/repair
		ids["Clinic drift"]: "clinic/content/take_cloud",
		ids["Cloud drift"]:  "cloud/content/resend",
		ids["Tomb drift"]:   "cloud/tombstone content/resend",
	}
	got := map[string]string{}
	for _, d := range r.Differences {
		got[d.ID] = d.Side + "/" + d.What + "/" + d.Repair
		if d.Kind != "patient" || d.Repaired {
			t.Errorf("difference %+v: want a patient, not repaired", d)
		}
	}
	if r.Equal || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verify found %v, want %v", got, want)
	}
	testenvWaitDivergence(t, localEvents)

	r = runVerify(t, c, true)
	for _, d := range r.Differences {
		if !d.Repaired || d.Error != "" {
			t.Errorf("repair of %+v failed", d)
		}
	}
	converged(t, c, cloud, 60*time.Second)
	if r := runVerify(t, c, false); !r.Equal {
		t.Fatalf("after repair verify = %+v, want equal", r)
	}
	for name, id := range ids {
		for _, sd := range []side{localSide(c), cloud} {
			var p patient
			call(t, "GET", sd.prefix+"patients/"+id, sd.token, nil, &p)
			if p.Data.Name != name {
				t.Errorf("%s: %s after repair = %q, want %q", sd.name, id, p.Data.Name, name)
			}
		}
	}
	resp, err := http.Get(c.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `scsync_verify_differences_total{side="cloud"} 4`) {
		t.Errorf("metrics do not count the differences:\n%s", grepLines(string(b), "scsync_verify"))
	}
}

func testenvWaitDivergence(t *testing.T, l *eventLog) {
	t.Helper()
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, e := range l.evs {
			if e.Type == events.TypeDivergence {
				return nil
			}
		}
		return fmt.Errorf("no divergence event among %d events", len(l.evs))
	})
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestVerifyDescends (issue 16, verify at scale): divergence injected in
// hundreds of buckets at once — rows edited in the cloud's PostgreSQL, rows
// edited in the clinic's SQLite, rows deleted from the cloud — is all found
// (more differing buckets than one answer carries, so the clinic asks for
// the rest in a second request), each record with its side, and all of it is
// repaired.
func TestVerifyDescends(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Suwon Verify Many")
	dir := t.TempDir()
	s.startLocal(t, c, dir)
	cloud := cloudSide(s.cloud[0], c)

	const n = 420
	idList := make([]string, n)
	idNums := make([]int64, n)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 6 {
				var p patient
				if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": fmt.Sprintf("Patient %d", i)}), &p); code != 201 {
					t.Errorf("create %d: %d", i, code)
					return
				}
				idList[i] = p.ID
				idNums[i], _ = strconv.ParseInt(p.ID, 10, 64)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	converged(t, c, cloud, 2*time.Minute)
	if r := runVerify(t, c, false); !r.Equal || r.Buckets != 0 || r.Records != n {
		t.Fatalf("verify of a clean stack = %+v, want %d records equal", r, n)
	}

	// 0..329 edited in the cloud, 330..399 in the clinic, 400..419 deleted
	// from the cloud.
	want := map[string]string{} // id → side/what/repair
	for i, id := range idList {
		switch {
		case i < 330:
			want[id] = "cloud/content/resend"
		case i < 400:
			want[id] = "clinic/content/take_cloud"
		default:
			want[id] = "cloud/missing/resend"
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pg, err := pgx.Connect(ctx, s.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	if _, err := pg.Exec(ctx, "UPDATE patients SET name = 'Tampered there' WHERE clinic_id = $1 AND id = ANY($2)", c.ID, idNums[:330]); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Exec(ctx, "DELETE FROM patients WHERE clinic_id = $1 AND id = ANY($2)", c.ID, idNums[400:]); err != nil {
		t.Fatal(err)
	}
	db, err := gorm.Open(sqlite.Open("file:"+filepath.Join(dir, "scsync.db")+"?_pragma=busy_timeout(10000)"), &gorm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("UPDATE patients SET name = 'Tampered here' WHERE id IN ?", idNums[330:400]).Error; err != nil {
		t.Fatal(err)
	}
	if sdb, err := db.DB(); err == nil {
		_ = sdb.Close()
	}
	buckets := map[int]bool{}
	for _, id := range idList {
		buckets[antientropy.Bucket("patient/"+id)] = true
	}
	if len(buckets) <= antientropy.MaxAnswerBuckets {
		t.Fatalf("the divergence spans %d buckets: want more than one answer's %d", len(buckets), antientropy.MaxAnswerBuckets)
	}

	r := runVerify(t, c, false)
	got := map[string]string{}
	for _, d := range r.Differences {
		got[d.ID] = d.Side + "/" + d.What + "/" + d.Repair
	}
	if r.Equal || r.Buckets != len(buckets) || r.Records != n {
		t.Errorf("verify = %d records, %d differing buckets, equal %v; want %d, %d, false", r.Records, r.Buckets, r.Equal, n, len(buckets))
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("difference of %s = %q, want %q", id, got[id], w)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("verify found %d differences, want %d", len(got), len(want))
	}

	r = runVerify(t, c, true)
	for _, d := range r.Differences {
		if !d.Repaired || d.Error != "" {
			t.Errorf("repair of %+v failed", d)
		}
	}
	if len(r.Differences) != n {
		t.Errorf("repairing run found %d differences, want %d", len(r.Differences), n)
	}
	converged(t, c, cloud, 2*time.Minute)
	testenv.CheckFor(t, 60*time.Second, time.Second, func() error {
		if r := runVerify(t, c, false); !r.Equal {
			return fmt.Errorf("after repair verify = %d differences in %d buckets, want equal", len(r.Differences), r.Buckets)
		}
		return nil
	})
	for _, i := range []int{0, 329, 330, 399, 400, 419} {
		for _, sd := range []side{localSide(c), cloud} {
			var p patient
			call(t, "GET", sd.prefix+"patients/"+idList[i], sd.token, nil, &p)
			if w := fmt.Sprintf("Patient %d", i); p.Data.Name != w {
				t.Errorf("%s: patient %d after repair = %q, want %q", sd.name, i, p.Data.Name, w)
			}
		}
	}
}
