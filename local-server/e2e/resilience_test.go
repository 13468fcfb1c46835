package e2e

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// TestOfflineConvergence (M1, M10, M20–M25): the clinic loses the broker and
// the cloud API while it makes 1,000 mixed changes of every kind and the
// cloud makes 200 of its own, some to the same records; once the link is
// back both sides hold exactly the same records and tombstones, with none
// lost and none doubled, without anyone touching anything.
func TestOfflineConvergence(t *testing.T) {
	parallel(t)
	s := newStack(t, 2)
	c := s.enroll(t, "Daegu Dental")
	amqpURL, amqpLink := viaProxy(t, s.amqpURL)
	cloudURL, apiLink := viaProxy(t, s.cloud[1])
	s.startLocalVia(t, c, t.TempDir(), amqpURL, cloudURL)
	cloud := cloudSide(s.cloud[0], c)

	// Online: some records of every kind, known to both sides.
	local := newWorkload(t, localSide(c), 1)
	local.seedAll()
	local.seedAll()
	converged(t, c, cloud, 60*time.Second)
	remote := newWorkload(t, cloud, 2)
	remote.adopt(local)
	seeded := len(local.made)

	amqpLink.Cut()
	apiLink.Cut()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 1000 {
			local.step()
		}
	}()
	go func() {
		defer wg.Done()
		for range 200 {
			remote.step()
		}
	}()
	wg.Wait()
	var st localStatus
	call(t, "GET", c.base+"/v1/status", "", nil, &st)
	if st.Pending == 0 || st.Outbox == 0 {
		t.Fatalf("clinic status while offline = %+v: the changes should be waiting", st)
	}
	t.Logf("offline: clinic %v, cloud %v; clinic status %+v", local.counts, remote.counts, st)
	// The same status is on /metrics for Prometheus.
	if m := metric(t, c.base, "scsync_local_records_pending"); m != float64(st.Pending) {
		t.Errorf("scsync_local_records_pending = %v, want %d", m, st.Pending)
	}

	amqpLink.Restore()
	apiLink.Restore()
	d := converged(t, c, cloud, 3*time.Minute)

	// Zero lost, zero doubled: every record either side created is there,
	// once, and nothing else (local-wins makes no conflict copies).
	want := seeded + (len(local.made) - seeded) + len(remote.made)
	if d.Count != want {
		t.Errorf("%d records after convergence, want %d (seeded %d, clinic created %d, cloud created %d)",
			d.Count, want, seeded, len(local.made)-seeded, len(remote.made))
	}
	for _, k := range append(local.made, remote.made...) {
		if _, ok := d.Records[k]; !ok {
			t.Errorf("%s was created but is missing", k)
		}
	}
}

// TestCloudNodeKilledMidBatch: cloud nodes die with SIGKILL while a clinic's
// changes stream in; nothing is lost and nothing is accepted twice.
func TestCloudNodeKilledMidBatch(t *testing.T) {
	parallel(t)
	s := newStack(t, 2)
	c := s.enroll(t, "Incheon Implant")
	s.startLocal(t, c, t.TempDir())
	cloud := cloudSide(s.cloud[0], c)

	const workers, steps = 4, 150
	ws := make([]*workload, workers)
	var wg sync.WaitGroup
	var progress sync.WaitGroup
	progress.Add(workers)
	for i := range ws {
		ws[i] = newWorkload(t, localSide(c), uint64(10+i))
		wg.Add(1)
		go func(w *workload) {
			defer wg.Done()
			for j := range steps {
				w.step()
				if j == steps/3 {
					progress.Done()
				}
			}
		}(ws[i])
	}
	progress.Wait()
	for i, n := range s.nodes {
		n.kill9(t)
		time.Sleep(time.Second)
		n.restart(t)
		waitReady(t, n, s.cloud[i])
	}
	wg.Wait()
	d := converged(t, c, cloud, 3*time.Minute)
	made := 0
	for _, w := range ws {
		made += len(w.made)
	}
	if d.Count != made {
		t.Errorf("%d records after convergence, want %d", d.Count, made)
	}
	// Each change accepted exactly once: the clinic's sequence has exactly
	// as many entries as changes were made.
	var head struct {
		Head int64 `json:"head"`
	}
	call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/changes?limit=1", c.Token, nil, &head)
	if head.Head != workers*steps {
		t.Errorf("cloud_seq head = %d, want %d: a change was lost or accepted twice", head.Head, workers*steps)
	}
}

// TestBrokerRestart: the (private) broker is killed and restarted while
// changes flow both ways; durable quorum queues and publisher confirms mean
// nothing is lost.
func TestBrokerRestart(t *testing.T) {
	parallel(t)
	// With its own broker identity, as production enrolls it: the broker
	// keeps users, permissions and queues across the restart.
	rabbit := testenv.StartPrivateRabbitManaged(t)
	s := newStackWith(t, stackOpts{cloudNodes: 1, amqpURL: rabbit.URL, mgmtURL: rabbit.MgmtURL})
	c := s.enroll(t, "Gwangju Kids Dental")
	if c.AMQP == nil {
		t.Fatal("enrollment gave the clinic no broker identity")
	}
	s.startLocal(t, c, t.TempDir())
	cloud := cloudSide(s.cloud[0], c)

	local := newWorkload(t, localSide(c), 21)
	local.seedAll()
	converged(t, c, cloud, 60*time.Second)
	remote := newWorkload(t, cloud, 22)
	remote.adopt(local)
	local.shared, remote.shared = true, true

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 300 {
			local.step()
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 100 {
			remote.step()
			if i == 30 {
				rabbit.Kill()
				time.Sleep(2 * time.Second)
				rabbit.Start()
			}
		}
	}()
	wg.Wait()
	d := converged(t, c, cloud, 3*time.Minute)
	if want := len(local.made) + len(remote.made); d.Count != want {
		t.Errorf("%d records after convergence, want %d", d.Count, want)
	}
	t.Logf("clinic %v, cloud %v", local.counts, remote.counts)
}

// TestConflictPoliciesBothSides: the same record edited on both sides while
// the clinic is offline ends with the policy's winner on both sides;
// keep-both keeps both contents, the loser as a flagged conflict copy.
func TestConflictPoliciesBothSides(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	for _, policy := range []string{"local-wins", "cloud-wins", "keep-both"} {
		t.Run(policy, func(t *testing.T) {
			var c clinic
			if code := call(t, "POST", s.cloud[0]+"/v1/admin/clinics", s.adminToken, map[string]string{"name": policy, "conflict_policy": policy}, &c); code != 201 {
				t.Fatalf("enroll: %d", code)
			}
			c.person = s.adminToken
			amqpURL, amqpLink := viaProxy(t, s.amqpURL)
			cloudURL, apiLink := viaProxy(t, s.cloud[0])
			s.startLocalVia(t, &c, t.TempDir(), amqpURL, cloudURL)
			cloud := cloudSide(s.cloud[0], &c)

			var p patient
			if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Original"}), &p); code != 201 {
				t.Fatalf("create: %d", code)
			}
			converged(t, &c, cloud, 60*time.Second)
			amqpLink.Cut()
			apiLink.Cut()
			if code := call(t, "PUT", c.base+"/v1/patients/"+p.ID, "", save("1.0", map[string]string{"name": "Clinic edit"}), nil); code != 200 {
				t.Fatalf("clinic edit: %d", code)
			}
			if code := call(t, "PUT", cloud.prefix+"patients/"+p.ID, c.person, save("1.0", map[string]string{"name": "Cloud edit"}), nil); code != 200 {
				t.Fatalf("cloud edit: %d", code)
			}
			amqpLink.Restore()
			apiLink.Restore()
			converged(t, &c, cloud, 90*time.Second)

			want := map[string]string{"local-wins": "Clinic edit", "cloud-wins": "Cloud edit", "keep-both": "Cloud edit"}[policy]
			for _, sd := range []side{localSide(&c), cloud} {
				var got patient
				call(t, "GET", sd.prefix+"patients/"+p.ID, sd.token, nil, &got)
				if got.Data.Name != want || got.Version != "3.0" {
					t.Errorf("%s: record = %q at %s, want %q at 3.0", sd.name, got.Data.Name, got.Version, want)
				}
			}
			var all struct {
				Items []struct {
					patient
					ConflictOf string `json:"conflict_of"`
				} `json:"items"`
			}
			call(t, "GET", c.base+"/v1/patients", "", nil, &all)
			names := map[string]string{}
			for _, it := range all.Items {
				names[it.Data.Name] = it.SyncState + fmt.Sprintf("/copy-of=%v", it.ConflictOf == p.ID)
			}
			if policy == "keep-both" {
				if names["Cloud edit"] != "conflict/copy-of=false" || names["Clinic edit"] != "conflict/copy-of=true" {
					t.Errorf("clinic records = %v, want the cloud's edit flagged and the clinic's kept as a flagged copy", names)
				}
			} else if len(all.Items) != 1 {
				t.Errorf("clinic records = %v, want only the winner", names)
			}
		})
	}
}

// TestWipedClinicResyncs (M29): a clinic whose database is lost starts
// empty and rebuilds every record and tombstone from the cloud's pull API.
func TestWipedClinicResyncs(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Ulsan Smile")
	dir := t.TempDir()
	s.startLocal(t, c, dir)
	cloud := cloudSide(s.cloud[0], c)
	w := newWorkload(t, localSide(c), 31)
	w.seedAll()
	for range 150 {
		w.step()
	}
	before := converged(t, c, cloud, 90*time.Second)

	c.proc.stop(t)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	s.startLocal(t, c, t.TempDir())
	after := converged(t, c, cloud, 90*time.Second)
	if diff := diffDigests(before.Records, after.Records); diff != "" || after.Count != before.Count {
		t.Fatalf("re-synced clinic differs from before the wipe: %s (%d vs %d records)", diff, after.Count, before.Count)
	}
	var st localStatus
	call(t, "GET", c.base+"/v1/status", "", nil, &st)
	if st.Synced == 0 || st.Checkpoint == 0 {
		t.Fatalf("status after re-sync = %+v", st)
	}
}
