package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// side is one REST API holding a clinic's records: sc-local, or sc-cloud
// under /v1/clinics/{clinic}.
type side struct {
	name   string
	prefix string // URL prefix of the collections, ending in "/"
	token  string
}

func localSide(c *clinic) side { return side{name: "clinic", prefix: c.base + "/v1/"} }

func cloudSide(base string, c *clinic) side {
	return side{name: "cloud", prefix: base + "/v1/clinics/" + c.ID + "/", token: c.person}
}

type record struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Version string `json:"version"`
	Deleted bool   `json:"deleted"`
}

// workload makes random creates, updates and deletes of every kind through
// one side's API, and remembers what it made, so a test can check that
// nothing was lost or doubled.
type workload struct {
	t    *testing.T
	sd   side
	rnd  *rand.Rand
	mu   sync.Mutex
	live map[wire.Kind][]ids.ID
	refs map[ids.ID]map[wire.Kind]ids.ID // a record's references, kept on update
	// made lists every record created, as "kind/id".
	made    []string
	counts  map[string]int
	nextNum int
	// shared: the other side changes the same records at the same time,
	// so a record may vanish (404) or a reference die (422) under us.
	shared bool
}

func newWorkload(t *testing.T, sd side, seed uint64) *workload {
	return &workload{t: t, sd: sd, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b9)),
		live: map[wire.Kind][]ids.ID{}, refs: map[ids.ID]map[wire.Kind]ids.ID{}, counts: map[string]int{}}
}

// adopt makes w aware of records another workload created (known to both sides).
func (w *workload) adopt(o *workload) {
	for k, l := range o.live {
		w.live[k] = append(w.live[k], l...)
	}
	for id, r := range o.refs {
		w.refs[id] = r
	}
}

func (w *workload) pick(k wire.Kind) ids.ID {
	l := w.live[k]
	if len(l) == 0 {
		return 0
	}
	return l[w.rnd.IntN(len(l))]
}

func (w *workload) forget(k wire.Kind, id ids.ID) {
	l := w.live[k]
	for i, x := range l {
		if x == id {
			w.live[k] = append(l[:i], l[i+1:]...)
			return
		}
	}
}

// create makes a record of kind k, or returns false when k's parent has no
// live record yet.
func (w *workload) create(k wire.Kind) bool {
	spec, _ := records.SpecOf(k)
	refs := map[wire.Kind]ids.ID{}
	for _, rk := range []wire.Kind{wire.KindPatient, wire.KindDoctor, wire.KindStudy, wire.KindImage, wire.KindReportTemplate} {
		if id := w.pick(rk); id != 0 && (rk == spec.Parent || w.rnd.IntN(2) == 0) {
			refs[rk] = id
		}
	}
	if spec.Parent != "" && refs[spec.Parent] == 0 {
		return false
	}
	w.nextNum++
	c := records.Sample(k, w.nextNum+w.rnd.IntN(1000)*1000, refs)
	var r record
	code := call(w.t, "POST", w.sd.prefix+spec.Table, w.sd.token, map[string]any{"data": c}, &r)
	if code == 422 && w.shared {
		w.counts["raced"]++
		return true
	}
	if code != 201 {
		w.t.Fatalf("%s: create %s: status %d %+v", w.sd.name, k, code, r)
	}
	id, err := ids.Parse(r.ID)
	if err != nil {
		w.t.Fatal(err)
	}
	w.live[k] = append(w.live[k], id)
	w.refs[id] = refs
	w.made = append(w.made, string(k)+"/"+r.ID)
	w.counts["create"]++
	return true
}

// step makes one random change: 50% create, 35% update, 15% delete.
func (w *workload) step() {
	w.mu.Lock()
	defer w.mu.Unlock()
	kinds := workloadKinds()
	k := kinds[w.rnd.IntN(len(kinds))].Kind
	spec, _ := records.SpecOf(k)
	roll := w.rnd.IntN(100)
	id := w.pick(k)
	switch {
	case roll < 50 || id == 0:
		if !w.create(k) {
			w.create(wire.KindPatient)
		}
	case roll < 85:
		w.nextNum++
		c := records.Sample(k, w.nextNum+w.rnd.IntN(1000)*1000, w.refs[id])
		var r record
		code := call(w.t, "PUT", fmt.Sprintf("%s%s/%s", w.sd.prefix, spec.Table, id), w.sd.token, map[string]any{"data": c}, &r)
		if w.raced(code, k, id) {
			return
		}
		if code != 200 {
			w.t.Fatalf("%s: update %s %s: status %d", w.sd.name, k, id, code)
		}
		w.counts["update"]++
	default:
		var r record
		code := call(w.t, "DELETE", fmt.Sprintf("%s%s/%s", w.sd.prefix, spec.Table, id), w.sd.token, nil, &r)
		if w.raced(code, k, id) {
			return
		}
		if code != 200 {
			w.t.Fatalf("%s: delete %s %s: status %d", w.sd.name, k, id, code)
		}
		w.forget(k, id)
		w.counts["delete"]++
	}
}

// raced reports whether code is the other side's doing (shared workloads).
func (w *workload) raced(code int, k wire.Kind, id ids.ID) bool {
	if !w.shared || (code != 404 && code != 422) {
		return false
	}
	if code == 404 {
		w.forget(k, id)
	}
	w.counts["raced"]++
	return true
}

// seedAll creates one record of every kind, parents first.
func (w *workload) seedAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, spec := range workloadKinds() {
		if !w.create(spec.Kind) {
			w.t.Fatalf("seed %s: no parent", spec.Kind)
		}
	}
}

type digest struct {
	Count   int               `json:"count"`
	Records map[string]string `json:"records"`
}

func digestOf(t *testing.T, sd side) digest {
	t.Helper()
	var d digest
	if code := call(t, "GET", sd.prefix+"digest", sd.token, nil, &d); code != 200 {
		t.Fatalf("%s digest: status %d", sd.name, code)
	}
	return d
}

// localStatus is sc-local's /v1/status.
type localStatus struct {
	Pending, Synced, Conflict, Outbox, Checkpoint int64
}

// converged waits until the clinic has nothing pending and both sides hold
// the same records in the same state, then returns the digest.
func converged(t *testing.T, c *clinic, cloud side, timeout time.Duration) digest {
	t.Helper()
	var d digest
	testenv.CheckFor(t, timeout, 500*time.Millisecond, func() error {
		var st localStatus
		call(t, "GET", c.base+"/v1/status", "", nil, &st)
		if st.Pending != 0 || st.Outbox != 0 {
			return fmt.Errorf("clinic status %+v", st)
		}
		local, remote := digestOf(t, localSide(c)), digestOf(t, cloud)
		if diff := diffDigests(local.Records, remote.Records); diff != "" {
			return fmt.Errorf("clinic and cloud differ: %s", diff)
		}
		d = local
		return nil
	})
	return d
}

func diffDigests(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, k+" only in the clinic")
		} else if v != w {
			out = append(out, k+" differs")
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k+" only in the cloud")
		}
	}
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("… %d differences", len(out)))
	}
	return strings.Join(out, ", ")
}

// viaProxy returns rawURL with its host replaced by a proxy to that host.
func viaProxy(t *testing.T, rawURL string) (string, *testenv.Proxy) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewProxy(t, u.Host)
	u.Host = p.Addr()
	return u.String(), p
}

// metric reads one unlabelled gauge or counter from base's /metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s = %q", name, v)
			}
			return f
		}
	}
	t.Fatalf("metric %s not on %s/metrics", name, base)
	return 0
}

// workloadKinds are the kinds the generic record routes serve: person
// accounts (users) have their own API (/v1/users) and are left out.
func workloadKinds() []records.Spec {
	out := make([]records.Spec, 0, len(records.Kinds))
	for _, spec := range records.Kinds {
		if spec.Kind != wire.KindUser {
			out = append(out, spec)
		}
	}
	return out
}
