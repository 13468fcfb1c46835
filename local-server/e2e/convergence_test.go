package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/testenv"
)

// Regression tests of issue 16: three ways the two sides used to end up
// different, each driven through the public HTTP APIs only.

// enrollWith creates a clinic with a conflict policy.
func (s *stack) enrollWith(t *testing.T, name, policy string) *clinic {
	t.Helper()
	var c clinic
	if code := call(t, "POST", s.cloud[0]+"/v1/admin/clinics", s.adminToken, map[string]string{"name": name, "conflict_policy": policy}, &c); code != 201 {
		t.Fatalf("enroll %s: status %d", name, code)
	}
	c.person = s.adminToken
	return &c
}

// eventLog collects the events a server pushes to its viewers.
type eventLog struct {
	mu  sync.Mutex
	evs []events.Event
}

func watchEvents(t *testing.T, url, token string) *eventLog {
	if token == "" { // the clinic server: its API token
		token = localAPIToken
	}
	t.Helper()
	l := &eventLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = events.Watch(ctx, url, token, 0, func(e events.Event) {
			l.mu.Lock()
			l.evs = append(l.evs, e)
			l.mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// waitFor waits until an event of that type about record id arrived.
func (l *eventLog) waitFor(t *testing.T, what, typ, id string) {
	t.Helper()
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, e := range l.evs {
			if e.Type == typ && e.Record.String() == id {
				return nil
			}
		}
		return fmt.Errorf("%s: no %s event for %s among %d events", what, typ, id, len(l.evs))
	})
}

type patientWithMarks struct {
	patient
	ConflictOf string    `json:"conflict_of"`
	Conflict   bool      `json:"conflict"`
	CreatedAt  time.Time `json:"created_at"`
}

func listPatients(t *testing.T, sd side) []patientWithMarks {
	t.Helper()
	var all struct {
		Items []patientWithMarks `json:"items"`
	}
	if code := call(t, "GET", sd.prefix+"patients?limit=1000", sd.token, nil, &all); code != 200 {
		t.Fatalf("%s: list patients: %d", sd.name, code)
	}
	return all.Items
}

// TestEditAnywayCollisionKeepsBoth (M13, issue 16 #1): with lockd down and
// the keep-both policy, the clinic opens "edit anyway" at 1.0; the cloud
// edits anyway, saves and closes, and the clinic receives that change; then
// the clinic saves. The clinic's save collides with a change made after its
// session opened, so it goes through the policy: both contents stay
// visible on both sides (the cloud's on the record, flagged; the clinic's
// as a flagged conflict copy) and viewers on both sides get a conflict
// event. It used to overwrite the cloud's edit silently.
func TestEditAnywayCollisionKeepsBoth(t *testing.T) {
	parallel(t)
	deadLockd := "http://" + freeAddr(t) // nothing listens: lockd is unreachable
	s := newStackWith(t, stackOpts{cloudNodes: 1, cloudEnv: []string{"SC_CLOUD_LOCKD_URL=" + deadLockd, "SC_CLOUD_LOCKD_TOKEN=svc"}})
	c := s.enrollWith(t, "Andong Dental", "keep-both")
	s.localEnv = []string{"SC_LOCAL_LOCKD_URL=" + deadLockd, "SC_LOCAL_LOCKD_TOKEN=clinic"}
	s.startLocal(t, c, t.TempDir())
	cloud := cloudSide(s.cloud[0], c)

	var p patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Original"}), &p); code != 201 {
		t.Fatalf("create: %d", code)
	}
	converged(t, c, cloud, 60*time.Second)
	localEvents := watchEvents(t, c.base+"/v1/events", "")
	cloudEvents := watchEvents(t, cloud.prefix+"events", c.person)

	anyway := map[string]any{"client": "ws1", "user": "dr.lee", "anyway": true}
	var ls sessionInfo
	if code := call(t, "POST", c.base+"/v1/patients/"+p.ID+"/edit", "", anyway, &ls); code != 200 || !ls.Unfenced || ls.Version != "1.0" {
		t.Fatalf("clinic edit anyway = %d %+v, want an unfenced session at 1.0", code, ls)
	}
	var cs sessionInfo
	if code := call(t, "POST", cloud.prefix+"patients/"+p.ID+"/edit", c.person, anyway, &cs); code != 200 || !cs.Unfenced {
		t.Fatalf("cloud edit anyway = %d %+v, want an unfenced session", code, cs)
	}
	if code := call(t, "POST", cloud.prefix+"patients/"+p.ID+"/save", c.person, map[string]any{"session": cs.Session, "data": map[string]string{"name": "Cloud edit"}}, nil); code != 200 {
		t.Fatalf("cloud save: %d", code)
	}
	call(t, "POST", cloud.prefix+"patients/"+p.ID+"/close", c.person, map[string]string{"session": cs.Session}, nil)
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		var got patient
		call(t, "GET", c.base+"/v1/patients/"+p.ID, "", nil, &got)
		if got.Version != "2.0" || got.Data.Name != "Cloud edit" {
			return fmt.Errorf("clinic copy = %q at %s, want the cloud's edit at 2.0", got.Data.Name, got.Version)
		}
		return nil
	})
	if code := call(t, "POST", c.base+"/v1/patients/"+p.ID+"/save", "", map[string]any{"session": ls.Session, "data": map[string]string{"name": "Clinic edit"}}, nil); code != 200 {
		t.Fatalf("clinic save: %d", code)
	}
	call(t, "POST", c.base+"/v1/patients/"+p.ID+"/close", "", map[string]string{"session": ls.Session}, nil)
	converged(t, c, cloud, 90*time.Second)

	for _, sd := range []side{localSide(c), cloud} {
		byName := map[string]patientWithMarks{}
		for _, it := range listPatients(t, sd) {
			byName[it.Data.Name] = it
		}
		rec, cp := byName["Cloud edit"], byName["Clinic edit"]
		if rec.ID != p.ID || rec.Version != "4.0" {
			t.Errorf("%s: record %s = %+v, want the cloud's edit at 4.0", sd.name, p.ID, rec)
		}
		if cp.ID == "" || cp.ID == p.ID || cp.ConflictOf != p.ID {
			t.Errorf("%s: the clinic's content is not kept as a conflict copy of %s: %+v", sd.name, p.ID, byName)
		}
		if sd.name == "clinic" && (rec.SyncState != "conflict" || cp.SyncState != "conflict") {
			t.Errorf("clinic: sync states %q and %q, want both conflict", rec.SyncState, cp.SyncState)
		}
		if sd.name == "cloud" && (!rec.Conflict || !cp.Conflict) {
			t.Errorf("cloud: conflict flags %v and %v, want both set", rec.Conflict, cp.Conflict)
		}
	}
	localEvents.waitFor(t, "clinic viewers", events.TypeConflict, p.ID)
	cloudEvents.waitFor(t, "cloud viewers", events.TypeConflict, p.ID)
}

// TestTombstonesConvergeAfterEditAgainstDelete (issue 16 #2): the clinic
// edits a record offline while the cloud deletes it; under the policies the
// clinic loses (cloud-wins, keep-both) both sides end with the same
// tombstone — the content from before the delete, not the losing edit on
// one side only. converged compares digests that cover tombstone content.
func TestTombstonesConvergeAfterEditAgainstDelete(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	for _, policy := range []string{"cloud-wins", "keep-both"} {
		t.Run(policy, func(t *testing.T) {
			c := s.enrollWith(t, "Tomb "+policy, policy)
			amqpURL, amqpLink := viaProxy(t, s.amqpURL)
			cloudURL, apiLink := viaProxy(t, s.cloud[0])
			s.startLocalVia(t, c, t.TempDir(), amqpURL, cloudURL)
			cloud := cloudSide(s.cloud[0], c)

			var p patient
			if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Before delete"}), &p); code != 201 {
				t.Fatalf("create: %d", code)
			}
			converged(t, c, cloud, 60*time.Second)
			amqpLink.Cut()
			apiLink.Cut()
			if code := call(t, "PUT", c.base+"/v1/patients/"+p.ID, "", save("1.0", map[string]string{"name": "Losing edit"}), nil); code != 200 {
				t.Fatalf("clinic edit: %d", code)
			}
			if code := call(t, "DELETE", cloud.prefix+"patients/"+p.ID, c.person, nil, nil); code != 200 {
				t.Fatalf("cloud delete: %d", code)
			}
			amqpLink.Restore()
			apiLink.Restore()
			converged(t, c, cloud, 90*time.Second)
			for _, sd := range []side{localSide(c), cloud} {
				var got patient
				call(t, "GET", sd.prefix+"patients/"+p.ID, sd.token, nil, &got)
				if !got.Deleted || got.Version != "3.0" || got.Data.Name != "Before delete" {
					t.Errorf("%s: tombstone = %q deleted=%v at %s, want the content from before the delete, deleted, at 3.0",
						sd.name, got.Data.Name, got.Deleted, got.Version)
				}
			}
		})
	}
}

// TestCreatedAtReplicated (issue 16 #3): a record made in the clinic while
// it is offline, and one made in the cloud, show the same creation time on
// both sides (the origin's), not each side's own.
func TestCreatedAtReplicated(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Gimhae Dental")
	amqpURL, amqpLink := viaProxy(t, s.amqpURL)
	cloudURL, apiLink := viaProxy(t, s.cloud[0])
	s.startLocalVia(t, c, t.TempDir(), amqpURL, cloudURL)
	cloud := cloudSide(s.cloud[0], c)

	amqpLink.Cut()
	apiLink.Cut()
	var offline patientWithMarks
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Made offline"}), &offline); code != 201 {
		t.Fatalf("create: %d", code)
	}
	time.Sleep(2 * time.Second) // the outage: the creation times must not differ by its length
	amqpLink.Restore()
	apiLink.Restore()
	var remote patientWithMarks
	if code := call(t, "POST", cloud.prefix+"patients", c.person, save("", map[string]string{"name": "Made in the cloud"}), &remote); code != 201 {
		t.Fatalf("cloud create: %d", code)
	}
	converged(t, c, cloud, 90*time.Second)
	for _, want := range []patientWithMarks{offline, remote} {
		var l, r patientWithMarks
		call(t, "GET", c.base+"/v1/patients/"+want.ID, "", nil, &l)
		call(t, "GET", cloud.prefix+"patients/"+want.ID, c.person, nil, &r)
		if !l.CreatedAt.Equal(r.CreatedAt) || !l.CreatedAt.Truncate(time.Millisecond).Equal(want.CreatedAt.Truncate(time.Millisecond)) {
			t.Errorf("%q: created_at clinic %s, cloud %s, want both %s (the origin's)", want.Data.Name,
				l.CreatedAt.Format(time.RFC3339Nano), r.CreatedAt.Format(time.RFC3339Nano), want.CreatedAt.Format(time.RFC3339Nano))
		}
	}
}
