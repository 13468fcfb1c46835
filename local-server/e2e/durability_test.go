package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// TestGroupCommitSurvivesKill9: sc-local gathers concurrent writes into one
// transaction and one fsync (group commit) and answers each only after that
// commit. Eight clients create and update patients as fast as it takes them;
// sc-local is killed with SIGKILL in the middle of the burst and started
// again. Every write it acknowledged is there (a create's record, an
// update's content), no write appears twice (each create names a chart
// number used once: a second record with it would be a write applied
// twice), and the cloud ends with exactly the clinic's records: each change
// went up with its outbox row, once.
func TestGroupCommitSurvivesKill9(t *testing.T) {
	parallel(t)
	s := newStackWith(t, stackOpts{cloudNodes: 1, fast: true})
	c := s.enroll(t, "Durable Dental")
	s.startLocal(t, c, t.TempDir())

	const writers = 8
	type ack struct {
		id, chart string
		updated   bool // the update setting phone "u" was acknowledged too
	}
	var (
		mu      sync.Mutex
		acked   = map[string]*ack{} // by chart number
		sent    = map[string]bool{} // every chart number sent (acknowledged or not)
		creates atomic.Int64
		wg      sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, url string, body any, out any) (int, error) {
		b, _ := json.Marshal(body)
		req, err := http.NewRequest(method, url, bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+localAPIToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, err // a body cut by the kill is no answer
		}
		return resp.StatusCode, nil
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				chart := fmt.Sprintf("w%d-%d", w, n)
				mu.Lock()
				sent[chart] = true
				mu.Unlock()
				var p patient
				code, err := do("POST", c.base+"/v1/patients", save("", map[string]string{"name": "Burst", "chart_no": chart}), &p)
				if err != nil || code != http.StatusCreated {
					return // sc-local is gone: this write is unacknowledged
				}
				a := &ack{id: p.ID, chart: chart}
				mu.Lock()
				acked[chart] = a
				mu.Unlock()
				creates.Add(1)
				if n%2 == 1 {
					continue
				}
				var u patient
				code, err = do("PUT", c.base+"/v1/patients/"+p.ID, save(p.Version, map[string]string{"name": "Burst", "chart_no": chart, "phone": "u"}), &u)
				if err != nil || code != http.StatusOK {
					return
				}
				mu.Lock()
				a.updated = true
				mu.Unlock()
			}
		}()
	}
	// Kill in the middle of the burst, once a few hundred writes are in.
	testenv.CheckFor(t, 60*time.Second, 5*time.Millisecond, func() error {
		if n := creates.Load(); n < 300 {
			return fmt.Errorf("%d creates acknowledged", n)
		}
		return nil
	})
	c.proc.kill9(t)
	wg.Wait()
	c.proc.restart(t)
	waitReady(t, c.proc, c.base)

	// Every patient the clinic has, by chart number.
	have := map[string][]patient{}
	after := ""
	for {
		var pg page
		if code := call(t, "GET", c.base+"/v1/patients?limit=1000&after="+after, "", nil, &pg); code != 200 {
			t.Fatalf("list patients: %d", code)
		}
		for _, p := range pg.Items {
			have[p.Data.ChartNo] = append(have[p.Data.ChartNo], p)
		}
		if pg.Next == "" || len(pg.Items) == 0 {
			break
		}
		after = pg.Next
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d creates acknowledged before the kill, %d sent, %d patients after the restart", len(acked), len(sent), len(have))
	for chart, a := range acked {
		ps := have[chart]
		switch {
		case len(ps) == 0:
			t.Errorf("acknowledged create %s (%s) lost", chart, a.id)
		case ps[0].ID != a.id:
			t.Errorf("create %s: the clinic has %s, acknowledged as %s", chart, ps[0].ID, a.id)
		case a.updated && ps[0].Data.Phone != "u":
			t.Errorf("acknowledged update of %s (%s) lost: phone %q, version %s", chart, a.id, ps[0].Data.Phone, ps[0].Version)
		}
	}
	for chart, ps := range have {
		if len(ps) > 1 {
			t.Errorf("chart %s: %d patients, want one (a write applied twice)", chart, len(ps))
		}
		if !sent[chart] {
			t.Errorf("chart %s: a patient no client created", chart)
		}
	}
	if unacked := len(have) - len(acked); unacked < 0 || unacked > writers {
		t.Errorf("%d patients beyond the acknowledged creates; at most one per writer was in flight at the kill (%d)", unacked, writers)
	}
	// The outbox survived with its changes: the cloud gets exactly the
	// clinic's records.
	converged(t, c, cloudSide(s.cloud[0], c), 60*time.Second)
}
