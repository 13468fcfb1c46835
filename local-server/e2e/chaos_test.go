package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// chaosEnv is the soak's appliance: three cloud nodes, three clinics, two
// lockd replicas, and the private broker, Redis and MinIO the faults hit.
type chaosEnv struct {
	s         *stack
	clinics   []*clinic
	dataDirs  []string
	links     [][]*testenv.Proxy // per clinic: broker, cloud API, lockd
	lockd     []*proc
	lockAddrs []string
	rabbit    *testenv.PrivateRabbit
	redis     *testenv.PrivateRedis
	minio     *testenv.PrivateMinIO
	hot       [][]*entry // per clinic: patients every clinic client edits under lock
}

const chaosClinics, chaosCloudNodes, chaosClientsPerClinic = 3, 3, 3

// chaosSettings reads CHAOS_DURATION (default 2m) and CHAOS_SEED (default
// the time, always printed so a run can be replayed).
func chaosSettings(t *testing.T) (time.Duration, uint64) {
	t.Helper()
	d := 2 * time.Minute
	if v := os.Getenv("CHAOS_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			t.Fatalf("CHAOS_DURATION=%q: want a positive duration like 2m or 30m", v)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED=%q: want an unsigned integer", v)
		}
	}
	return d, seed
}

// startChaos starts the appliance, every clinic's links through proxies
// the injector can cut or slow down.
func startChaos(t *testing.T) *chaosEnv {
	t.Helper()
	e := &chaosEnv{
		rabbit: testenv.StartPrivateRabbit(t),
		redis:  testenv.StartPrivateRedis(t),
		minio:  testenv.StartPrivateMinIO(t),
	}
	serviceTok := "svc-" + testenv.Name("token")
	e.lockAddrs = []string{freeAddr(t), freeAddr(t)}
	lb := testenv.NewProxy(t, e.lockAddrs...) // fails over between the replicas
	edit := []string{"EDIT_LOCK_TTL=3s", "EDIT_IDLE_WARN=1m", "EDIT_IDLE_GRACE=1m"}
	cloudEnv := []string{
		"SC_CLOUD_S3_ENDPOINT=" + e.minio.Endpoint, "SC_CLOUD_S3_ACCESS_KEY=" + e.minio.AccessKey,
		"SC_CLOUD_S3_SECRET_KEY=" + e.minio.SecretKey, "SC_CLOUD_LOG_LEVEL=info",
		"SC_CLOUD_LOCKD_URL=http://" + lb.Addr(), "SC_CLOUD_LOCKD_TOKEN=" + serviceTok,
	}
	for _, v := range edit {
		cloudEnv = append(cloudEnv, "SC_CLOUD_"+v)
	}
	e.s = newStackWith(t, stackOpts{cloudNodes: chaosCloudNodes, amqpURL: e.rabbit.URL, cloudEnv: cloudEnv})
	// lockd runs before enrollment, which registers each clinic's token.
	e.lockd = startLockdAt(t, e.lockAddrs, e.redis.Addr, serviceTok, nil)
	for i := range chaosClinics {
		c := e.s.enroll(t, fmt.Sprintf("Chaos Clinic %d", i+1))
		e.clinics = append(e.clinics, c)
	}
	for i, c := range e.clinics {
		tok := c.Lockd.Token
		amqpURL, amqpLink := viaProxy(t, e.rabbit.URL)
		// The clinic's cloud API link fails over to the other nodes.
		var nodes []string
		for k := range e.s.cloud {
			u, err := url.Parse(e.s.cloud[(i+k)%len(e.s.cloud)])
			if err != nil {
				t.Fatal(err)
			}
			nodes = append(nodes, u.Host)
		}
		apiLink := testenv.NewProxy(t, nodes...)
		lockLink := testenv.NewProxy(t, lb.Addr())
		e.links = append(e.links, []*testenv.Proxy{amqpLink, apiLink, lockLink})
		e.s.localEnv = []string{"SC_LOCAL_LOCKD_URL=http://" + lockLink.Addr(), "SC_LOCAL_LOCKD_TOKEN=" + tok, "SC_LOCAL_LOG_LEVEL=info"}
		for _, v := range edit {
			e.s.localEnv = append(e.s.localEnv, "SC_LOCAL_"+v)
		}
		dir := t.TempDir()
		e.dataDirs = append(e.dataDirs, dir)
		e.s.startLocalVia(t, c, dir, amqpURL, "http://"+apiLink.Addr())
	}
	return e
}

// TestChaos is the soak of issue 7 (`make chaos`): three clinics and three
// cloud nodes through random operations (create, edit under lock, save,
// update, delete, un-sync, file uploads both ways) while faults are
// injected (SIGKILL of sc-local, cloud nodes and lockd replicas; broker and
// Redis restarts; cut and slow links; MinIO stopped); then everything
// heals and the ledger of acknowledged operations is checked against both
// sides. CHAOS_DURATION sets how long the faults go on (default 2m),
// CHAOS_SEED the seed of the operations and the fault schedule.
func TestChaos(t *testing.T) {
	parallelLong(t)
	duration, seed := chaosSettings(t)
	t.Logf("chaos: seed %d, duration %s (replay: CHAOS_SEED=%d CHAOS_DURATION=%s make chaos)", seed, duration, seed, duration)
	root := rand.New(rand.NewPCG(seed, 0x5c5_c4a05))
	env := startChaos(t)
	lg := newLedger()

	// Records every actor of a side works under: hot patients the clinic's
	// clients race for, and a study per side for new images.
	var actors []*actor
	for i := range env.clinics {
		setup := &actor{t: t, env: env, lg: lg, name: fmt.Sprintf("c%d-setup", i+1), ci: i, rnd: rand.New(rand.NewPCG(root.Uint64(), root.Uint64()))}
		cloudSetup := &actor{t: t, env: env, lg: lg, name: fmt.Sprintf("c%d-cloud-setup", i+1), ci: i, cloud: true, rnd: rand.New(rand.NewPCG(root.Uint64(), root.Uint64()))}
		var hot []*entry
		for range 3 {
			hot = append(hot, mustMake(t, setup.newPatient()))
		}
		env.hot = append(env.hot, hot)
		study := mustMake(t, setup.newStudy(hot[0]))
		cloudStudy := mustMake(t, cloudSetup.newStudy(mustMake(t, cloudSetup.newPatient())))
		for k := range chaosClientsPerClinic + 1 {
			a := &actor{t: t, env: env, lg: lg, ci: i, hot: hot, study: study, dir: t.TempDir(),
				rnd: rand.New(rand.NewPCG(root.Uint64(), root.Uint64()))}
			a.name = fmt.Sprintf("c%d-ws%d", i+1, k+1)
			if k == chaosClientsPerClinic {
				a.name, a.cloud, a.study = fmt.Sprintf("c%d-cloud", i+1), true, cloudStudy
			}
			actors = append(actors, a)
		}
	}
	for i, c := range env.clinics {
		converged(t, c, cloudSide(env.s.cloud[0], c), 2*time.Minute)
		t.Logf("chaos: clinic %d (%s) ready: sc-local %s", i+1, c.ID, c.base)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, a := range actors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a.step()
			}
		}()
	}
	in := &injector{t: t, env: env, rnd: rand.New(rand.NewPCG(root.Uint64(), root.Uint64())), start: time.Now(), counts: map[fault]int{}}
	in.run(time.Now().Add(duration))
	close(stop)
	wg.Wait()
	env.heal()
	in.logf("every fault healed; operations stopped; checking")
	t.Logf("chaos: %s", in.summary())
	t.Logf("chaos: %s", lg.summary())
	env.check(t, lg)
	if t.Failed() {
		t.Logf("chaos: FAILED; replay with CHAOS_SEED=%d CHAOS_DURATION=%s (the interleaving with real processes differs from run to run)", seed, duration)
	}
}

func mustMake(t *testing.T, e *entry) *entry {
	t.Helper()
	if e == nil {
		t.Fatal("setup: a create failed with every service up")
	}
	return e
}

// newStudy makes a study of patient p whose description is its marker.
func (a *actor) newStudy(p *entry) *entry {
	pid, err := ids.Parse(p.id)
	if err != nil {
		a.t.Error(err)
		return nil
	}
	marker := a.lg.unique(a.name + "-s")
	st := records.Sample(wire.KindStudy, a.rnd.IntN(1000), map[wire.Kind]ids.ID{wire.KindPatient: pid}).(records.Study)
	st.Description = marker
	return a.create(wire.KindStudy, marker, marker, st)
}

// check compares everything after healing: digests, the ledger on both
// sides, duplicates, files, fenced saves. It prints each check's numbers.
func (e *chaosEnv) check(t *testing.T, lg *ledger) {
	t.Helper()
	// Files first: their transfers must finish before the clinic is idle.
	e.checkFiles(t, lg)
	// Digests: wait for each clinic to converge; one that does not is
	// reported, and the ledger then says what is missing where.
	digests := make([][2]digest, len(e.clinics))
	deadline := time.Now().Add(5 * time.Minute)
	for i, c := range e.clinics {
		cloud := cloudSide(e.s.cloud[0], c)
		for {
			var st localStatus
			call(t, "GET", c.base+"/v1/status", "", nil, &st)
			digests[i] = [2]digest{digestOf(t, localSide(c)), digestOf(t, cloud)}
			diff := diffDigests(digests[i][0].Records, digests[i][1].Records)
			if st.Pending == 0 && st.Outbox == 0 && diff == "" {
				t.Logf("chaos: check digests, clinic %d: clinic and cloud equal, %d records (tombstones included)", i+1, digests[i][0].Count)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("clinic %d has not converged 5m after healing: status %+v; %s", i+1, st, diff)
				break
			}
			time.Sleep(500 * time.Millisecond) // polling the convergence
		}
	}

	problems := e.checkLedger(t, lg, digests)
	fp, sessions, saves := lg.overlaps()
	t.Logf("chaos: check fencing: %d sessions with accepted saves, %d accepted fenced saves on %d records: %d problems", sessions, saves, len(lg.saves), len(fp))
	problems = append(problems, fp...)
	stalled := 0
	lg.mu.Lock()
	for k, n := range lg.ops {
		if strings.HasSuffix(k, "stalled past the lock TTL: save refused") {
			stalled += n
		}
	}
	lg.mu.Unlock()
	t.Logf("chaos: check stale saves: %d saves of clients stalled past their lock's TTL refused (an accepted one fails the test)", stalled)
	if stalled == 0 {
		problems = append(problems, "no client stalled past its lock's TTL: the stale-save check did not run")
	}
	for i, p := range problems {
		if i == 30 {
			t.Errorf("… and %d more", len(problems)-30)
			break
		}
		t.Error(p)
	}
}

// checkLedger compares the ledger with both sides of every clinic and
// returns the problems.
func (e *chaosEnv) checkLedger(t *testing.T, lg *ledger, digests [][2]digest) []string {
	t.Helper()
	lg.mu.Lock()
	defer lg.mu.Unlock()
	var problems []string
	var acked, doubtWrites, doubtCreates, doubtCreatesMade, dups int
	for _, en := range lg.entries {
		acked += len(en.acked)
		doubtWrites += len(en.doubt)
		if len(en.acked) == 0 {
			doubtCreates++
		}
	}
	for i, c := range e.clinics {
		for n, sd := range []side{localSide(c), cloudSide(e.s.cloud[1%len(e.s.cloud)], c)} {
			seen := map[*entry]*heldCopy{}
			listed := 0
			for _, k := range []wire.Kind{wire.KindPatient, wire.KindStudy, wire.KindImage} {
				spec, _ := records.SpecOf(k)
				for _, r := range listAll(t, sd, spec.Table) {
					listed++
					h := copyOf(k, r)
					en := lg.byMarker[h.marker]
					if en == nil || en.clinic != i || en.kind != k {
						problems = append(problems, fmt.Sprintf("clinic %d, %s: %s/%s (marker %q) is no record the soak made", i+1, sd.name, k, r.ID, h.marker))
						continue
					}
					if prev := seen[en]; prev != nil {
						dups++
						problems = append(problems, fmt.Sprintf("clinic %d, %s: duplicated: %s %s and %s carry the same marker %q", i+1, sd.name, k, prev.id, h.id, h.marker))
						continue
					}
					seen[en] = h
				}
			}
			if listed != digests[i][n].Count {
				problems = append(problems, fmt.Sprintf("clinic %d, %s: %d records listed, the digest has %d", i+1, sd.name, listed, digests[i][n].Count))
			}
			for _, en := range lg.entries {
				if en.clinic != i {
					continue
				}
				h := seen[en]
				if msg := en.judge(sd.name, h); msg != "" {
					problems = append(problems, fmt.Sprintf("clinic %d, %s %s (marker %s, made in the %s): %s", i+1, en.kind, en.id, en.marker, en.origin, msg))
				}
				if h != nil && len(en.acked) == 0 && sd.name == "clinic" {
					doubtCreatesMade++
				}
			}
		}
	}
	t.Logf("chaos: check ledger: %d records (%d creates unanswered, %d of them made), %d acknowledged writes, %d unanswered writes; "+
		"compared on both sides of every clinic: %d problems, %d duplicated", len(lg.entries), doubtCreates, doubtCreatesMade, acked, doubtWrites, len(problems), dups)
	return problems
}

// fetchStatus fetches f from S3 through a presigned GET the cloud makes now,
// for a diagnosis.
func (e *chaosEnv) fetchStatus(t *testing.T, f fileEntry) string {
	c := e.clinics[f.clinic]
	var dl filekey.DownloadResponse
	var ae apiError
	if code := call(t, "GET", cloudSide(e.s.cloud[0], c).prefix+"files/"+f.sha+"/download", c.Token, nil, &dl); code != 200 {
		call(t, "GET", cloudSide(e.s.cloud[0], c).prefix+"files/"+f.sha+"/download", c.Token, nil, &ae)
		return fmt.Sprintf("no URL: %d %+v", code, ae)
	}
	resp, err := http.Get(dl.Get.URL)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Sprintf("%d %.300s", resp.StatusCode, b)
	}
	s := sha256.Sum256(b)
	return fmt.Sprintf("200, %d bytes, SHA-256 %x", len(b), s)
}

// copyOf reduces a listed record to what the ledger checks.
func copyOf(k wire.Kind, r anyRecord) *heldCopy {
	h := &heldCopy{id: r.ID, deleted: r.Deleted, syncState: r.SyncState}
	h.marker, _ = r.Data[markerField[k]].(string)
	h.tag, _ = r.Data[tagField[k]].(string)
	h.sha, _ = r.Data["sha256"].(string)
	h.version, _ = version.Parse(r.Version)
	return h
}

// listAll lists every record of a collection, tombstones included.
func listAll(t *testing.T, sd side, table string) []anyRecord {
	t.Helper()
	var all []anyRecord
	after := ""
	for {
		var p struct {
			Items []anyRecord `json:"items"`
			Next  string      `json:"next"`
		}
		if code := call(t, "GET", sd.prefix+table+"?deleted=true&limit=1000&after="+after, sd.token, nil, &p); code != 200 {
			t.Fatalf("%s: list %s: %d", sd.name, table, code)
		}
		all = append(all, p.Items...)
		if p.Next == "" || len(p.Items) == 0 {
			return all
		}
		after = p.Next
	}
}

// checkFiles waits for every file handed over to be present on the other
// side, then checks its bytes: clinic imports through a presigned GET from
// S3, cloud uploads in the clinic's file store.
func (e *chaosEnv) checkFiles(t *testing.T, lg *ledger) {
	t.Helper()
	lg.mu.Lock()
	files := append([]fileEntry(nil), lg.files...)
	lg.mu.Unlock()
	up := 0
	// pending says why f is not on both sides yet, or "".
	pending := func(f fileEntry) string {
		c := e.clinics[f.clinic]
		var l struct{ Items []transferRow }
		call(t, "GET", c.base+"/v1/files?sha256="+f.sha, "", nil, &l)
		if len(l.Items) == 0 {
			return "the clinic has no transfer of it"
		}
		for _, tr := range l.Items {
			if tr.State != "present" {
				return fmt.Sprintf("the clinic's transfer is %s (%s)", tr.State, tr.Reason)
			}
		}
		var cf filekey.File
		if code := call(t, "GET", cloudSide(e.s.cloud[0], c).prefix+"files/"+f.sha, c.Token, nil, &cf); code != 200 || cf.State != "present" {
			return fmt.Sprintf("the cloud's file is %d %+v", code, cf)
		}
		return ""
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		waiting := 0
		for _, f := range files {
			if pending(f) != "" {
				waiting++
			}
		}
		if waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, f := range files {
				if why := pending(f); why != "" {
					t.Errorf("clinic %d: file %s (up %v, image %s) not on both sides after 4m: %s; S3 through a fresh presigned GET: %s",
						f.clinic+1, f.sha, f.up, f.image.id, why, e.fetchStatus(t, f))
				}
			}
			return
		}
		time.Sleep(time.Second) // polling: the transfers run on their own
	}
	for _, f := range files {
		c := e.clinics[f.clinic]
		var b []byte
		if f.up {
			up++
			var dl filekey.DownloadResponse
			if code := call(t, "GET", cloudSide(e.s.cloud[0], c).prefix+"files/"+f.sha+"/download", c.Token, nil, &dl); code != 200 {
				t.Errorf("clinic %d: download of %s: %d", f.clinic+1, f.sha, code)
				continue
			}
			resp, err := http.Get(dl.Get.URL)
			if err != nil {
				t.Errorf("clinic %d: GET %s from S3: %v", f.clinic+1, f.sha, err)
				continue
			}
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("clinic %d: GET %s from S3: %d %v", f.clinic+1, f.sha, resp.StatusCode, err)
				continue
			}
		} else {
			var err error
			if b, err = os.ReadFile(filepath.Join(e.dataDirs[f.clinic], "files", f.sha)); err != nil {
				t.Errorf("clinic %d: downloaded file: %v", f.clinic+1, err)
				continue
			}
		}
		if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != f.sha || len(b) != f.size {
			t.Errorf("clinic %d: file %s has SHA-256 %x and %d bytes, want %d bytes", f.clinic+1, f.sha, s, len(b), f.size)
		}
	}
	t.Logf("chaos: check files: %d imported in clinics present in S3 with the right SHA-256 (read back through presigned GETs), "+
		"%d uploaded in the cloud downloaded to their clinic with the right SHA-256", up, len(files)-up)

}
