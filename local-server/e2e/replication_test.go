package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/testenv"
)

type patient struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	ClinicID  string     `json:"clinic_id"`
	Version   string     `json:"version"`
	Origin    string     `json:"origin"`
	Deleted   bool       `json:"deleted"`
	SyncState string     `json:"sync_state"`
	SyncedAt  *time.Time `json:"synced_at"`
	Data      struct {
		ChartNo string `json:"chart_no"`
		Name    string `json:"name"`
		Phone   string `json:"phone"`
	} `json:"data"`
}

// save is the body of a create or update: the content, and the optimistic
// base version when base is not empty.
func save(base string, data map[string]string) map[string]any {
	b := map[string]any{"data": data}
	if base != "" {
		b["base_version"] = base
	}
	return b
}

type page struct {
	Items []patient `json:"items"`
	Next  string    `json:"next"`
}

// TestPatientRoundTrip is the first slice: a patient made in the clinic
// reaches the cloud (read through the other cloud node), the clinic sees it
// synced once the cloud's acceptance returns, and a cloud edit comes back.
func TestPatientRoundTrip(t *testing.T) {
	parallel(t)
	s := newStack(t, 2)
	c := s.enroll(t, "Seoul Smile Dental")
	s.startLocal(t, c, t.TempDir())

	var created patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"chart_no": "C-0001", "name": "Kim Minji", "phone": "010-1234-5678"}), &created); code != 201 {
		t.Fatalf("create patient: status %d", code)
	}
	if created.Version != "1.0" || created.SyncState != "pending" || created.ClinicID != c.ID {
		t.Fatalf("created = %+v, want version 1.0, pending, clinic %s", created, c.ID)
	}

	// Visible in the cloud, through the node the clinic does not talk to.
	var inCloud patient
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		code := call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/"+created.ID, c.person, nil, &inCloud)
		if code != 200 {
			return fmt.Errorf("cloud GET patient: %d", code)
		}
		return nil
	})
	if inCloud.Data.Name != "Kim Minji" || inCloud.Version != "1.0" || inCloud.Origin != "local" {
		t.Fatalf("cloud copy = %+v", inCloud)
	}

	// Synced (with a time) only once the acceptance came back.
	var local patient
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		call(t, "GET", c.base+"/v1/patients/"+created.ID, "", nil, &local)
		if local.SyncState != "synced" || local.SyncedAt == nil {
			return fmt.Errorf("local state %s", local.SyncState)
		}
		return nil
	})

	// Edit in the cloud (node 1) with an optimistic base version.
	var edited patient
	if code := call(t, "PUT", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/"+created.ID, c.person,
		save("1.0", map[string]string{"chart_no": "C-0001", "name": "Kim Minji", "phone": "010-9999-0000"}), &edited); code != 200 {
		t.Fatalf("cloud edit: status %d", code)
	}
	if edited.Version != "2.0" || edited.Origin != "cloud" {
		t.Fatalf("cloud edit = %+v, want version 2.0 origin cloud", edited)
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		call(t, "GET", c.base+"/v1/patients/"+created.ID, "", nil, &local)
		if local.Data.Phone != "010-9999-0000" || local.Version != "2.0" || local.SyncState != "synced" {
			return fmt.Errorf("local copy %+v", local)
		}
		return nil
	})

	// A stale base version is refused in the cloud with a clear code.
	var apiErr struct{ Code, Message string }
	if code := call(t, "PUT", s.cloud[1]+"/v1/clinics/"+c.ID+"/patients/"+created.ID, c.person,
		save("1.0", map[string]string{"name": "X"}), &apiErr); code != 409 || apiErr.Code != "version_conflict" {
		t.Fatalf("stale edit = %d %+v, want 409 version_conflict", code, apiErr)
	}

	// A local delete reaches the cloud as a tombstone, not a removal.
	if code := call(t, "DELETE", c.base+"/v1/patients/"+created.ID, "", nil, &local); code != 200 || !local.Deleted || local.Version != "3.0" {
		t.Fatalf("local delete = %d %+v", code, local)
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		call(t, "GET", s.cloud[1]+"/v1/clinics/"+c.ID+"/patients/"+created.ID, c.person, nil, &inCloud)
		if !inCloud.Deleted || inCloud.Version != "3.0" {
			return fmt.Errorf("cloud copy %+v", inCloud)
		}
		return nil
	})
	var live page
	call(t, "GET", s.cloud[1]+"/v1/clinics/"+c.ID+"/patients", c.person, nil, &live)
	if len(live.Items) != 0 {
		t.Fatalf("cloud live list after delete = %+v, want empty", live.Items)
	}

	// Status reports everything synced and the checkpoint at the head.
	var st struct {
		Pending, Synced, Outbox, Checkpoint int64
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		call(t, "GET", c.base+"/v1/status", "", nil, &st)
		if st.Pending != 0 || st.Synced != 1 || st.Outbox != 0 || st.Checkpoint != 3 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// TestTenantIsolation: a clinic's people and token reach only their own
// clinic, and the clinic's machine token cannot act as a person.
func TestTenantIsolation(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	a := s.enroll(t, "Clinic A")
	b := s.enroll(t, "Clinic B")
	var p patient
	if code := call(t, "POST", s.cloud[0]+"/v1/clinics/"+a.ID+"/patients", a.person, save("", map[string]string{"name": "A's patient"}), &p); code != 201 {
		t.Fatalf("create in A: %d", code)
	}
	var e struct{ Code, Message string }
	bob, ann := s.login(t, b, "bob", "admin"), s.login(t, a, "ann", "viewer")
	tests := []struct {
		name, method, path, token string
		want                      int
	}{
		{"B's admin reads A's patient", "GET", "/v1/clinics/" + a.ID + "/patients/" + p.ID, bob, 404},
		{"B's admin lists A", "GET", "/v1/clinics/" + a.ID + "/patients", bob, 404},
		{"B pulls A's changes", "GET", "/v1/clinics/" + a.ID + "/changes", b.Token, 404},
		{"B's admin edits A's patient", "PUT", "/v1/clinics/" + a.ID + "/patients/" + p.ID, bob, 404},
		{"B's admin reads A's patient under its own clinic", "GET", "/v1/clinics/" + b.ID + "/patients/" + p.ID, bob, 404},
		{"no token", "GET", "/v1/clinics/" + a.ID + "/patients", "-", 401},
		{"wrong token", "GET", "/v1/clinics/" + a.ID + "/patients", "sct_nope", 401},
		{"clinic token on admin API", "GET", "/v1/admin/clinics", a.Token, 403},
		{"clinic token listing as a person", "GET", "/v1/clinics/" + a.ID + "/patients", a.Token, 403},
		{"clinic token editing as a person", "PUT", "/v1/clinics/" + a.ID + "/patients/" + p.ID, a.Token, 403},
		{"clinic token reads one record of its own clinic (verify)", "GET", "/v1/clinics/" + a.ID + "/patients/" + p.ID, a.Token, 200},
		{"clinic token reads B's record", "GET", "/v1/clinics/" + b.ID + "/patients/" + p.ID, a.Token, 404},
		{"B verifies against A", "POST", "/v1/clinics/" + a.ID + "/verify", b.Token, 404},
		{"B's admin on A's verify (machine only)", "POST", "/v1/clinics/" + a.ID + "/verify", bob, 403},
		{"A verifies its own", "POST", "/v1/clinics/" + a.ID + "/verify", a.Token, 200},
		{"A's person reads its own", "GET", "/v1/clinics/" + a.ID + "/patients/" + p.ID, ann, 200},
	}
	for _, tt := range tests {
		var body any = nil
		switch {
		case tt.method == "PUT":
			body = save("", map[string]string{"name": "hijack"})
		case strings.HasSuffix(tt.path, "/verify"):
			body = map[string]any{"want": []int{0, 1}}
		}
		if code := call(t, tt.method, s.cloud[0]+tt.path, tt.token, body, &e); code != tt.want {
			t.Errorf("%s: %s %s = %d, want %d", tt.name, tt.method, tt.path, code, tt.want)
		}
	}
}

// TestPoisonAndConnectionLoss: a malformed message and a message claiming
// another clinic land in the dead-letter queue with their reasons while valid
// changes keep flowing, and killing every broker connection midway loses none
// of 200 changes made concurrently.
func TestPoisonAndConnectionLoss(t *testing.T) {
	parallel(t)
	s := newStack(t, 2)
	c := s.enroll(t, "Busan Ortho")
	other := s.enroll(t, "Other")
	s.startLocal(t, c, t.TempDir())

	const n = 200
	var wg sync.WaitGroup
	idsCh := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p patient
			if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": fmt.Sprintf("Patient %03d", i)}), &p); code != 201 {
				t.Errorf("create %d: %d", i, code)
				return
			}
			idsCh <- p.ID
		}()
		if i == n/2 {
			testenv.RabbitCloseConnections(t, s.vhost)
		}
	}
	wg.Wait()
	close(idsCh)

	// Every change reaches the cloud exactly once and comes back accepted.
	testenv.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
		var st struct{ Pending, Synced, Outbox int64 }
		call(t, "GET", c.base+"/v1/status", "", nil, &st)
		if st.Synced != n || st.Pending != 0 || st.Outbox != 0 {
			return fmt.Errorf("local status %+v", st)
		}
		return nil
	})
	seen := map[string]bool{}
	after := ""
	for {
		var pg page
		call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients?limit=1000&after="+after, c.person, nil, &pg)
		for _, p := range pg.Items {
			if seen[p.ID] {
				t.Errorf("patient %s listed twice", p.ID)
			}
			seen[p.ID] = true
		}
		if pg.Next == "" {
			break
		}
		after = pg.Next
	}
	for id := range idsCh {
		if !seen[id] {
			t.Errorf("patient %s lost on the way to the cloud", id)
		}
	}
	if len(seen) != n {
		t.Errorf("cloud holds %d patients, want %d", len(seen), n)
	}
	var changes struct {
		Head int64 `json:"head"`
	}
	call(t, "GET", s.cloud[1]+"/v1/clinics/"+c.ID+"/changes?limit=1", c.Token, nil, &changes)
	if changes.Head != n {
		t.Errorf("clinic cloud_seq head = %d, want %d (a redelivered change was accepted twice?)", changes.Head, n)
	}

	// The poison is published as the clinic would (its own broker login,
	// user-id set); the dead letters are read as the operator.
	conn, err := amqp.Dial(s.amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	cconn, err := amqp.Dial(clinicAMQP(t, c, s.amqpURL))
	if err != nil {
		t.Fatal(err)
	}
	defer cconn.Close()
	cch, err := cconn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	userID := ""
	if c.AMQP != nil {
		userID = c.AMQP.User
	}
	pub := func(body string) {
		t.Helper()
		err := cch.PublishWithContext(context.Background(), "scsync.up", "clinic."+c.ID, true, false,
			amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, UserId: userID, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
	}
	pub(`{"protocol":2,"clinic":"` + c.ID + `","changes":[{"type":"change"`) // truncated JSON
	foreign := fmt.Sprintf(`{"protocol":2,"clinic":"%[1]s","changes":[{"protocol":2,"type":"change","clinic":"%[1]s","origin":"local","change_id":"5","kind":"patient","record_id":"6","base_version":"0.0","new_version":"1.0","at":"2026-11-22T00:00:00Z","payload":{"name":"x"}}]}`, other.ID)
	pub(foreign)
	// A well-formed batch whose second change has invalid content: that
	// change alone is dead-lettered, the first is applied.
	mixed := fmt.Sprintf(`{"protocol":2,"clinic":"%[1]s","changes":[`+
		`{"protocol":2,"type":"change","clinic":"%[1]s","origin":"local","change_id":"7","kind":"patient","record_id":"8","base_version":"0.0","new_version":"1.0","at":"2026-11-22T00:00:00Z","payload":{"name":"good one"}},`+
		`{"protocol":2,"type":"change","clinic":"%[1]s","origin":"local","change_id":"9","kind":"patient","record_id":"10","base_version":"0.0","new_version":"1.0","at":"2026-11-22T00:00:00Z","payload":{"name":""}}]}`, c.ID)
	pub(mixed)

	// Both poison messages are in the dead-letter queue with their reasons.
	reasons := map[string]bool{}
	testenv.CheckFor(t, 20*time.Second, 200*time.Millisecond, func() error {
		d, ok, err := ch.Get("scsync.dead", true)
		if err != nil {
			return err
		}
		if ok {
			r, _ := d.Headers["x-scsync-dead-reason"].(string)
			reasons[r] = true
		}
		if len(reasons) < 3 {
			return fmt.Errorf("dead letters so far: %v", reasons)
		}
		return nil
	})
	var sawMalformed, sawForeign, sawInvalid bool
	for r := range reasons {
		sawMalformed = sawMalformed || strings.Contains(r, "wire: invalid message")
		sawForeign = sawForeign || strings.Contains(r, "arrived with the routing key of clinic "+c.ID)
		sawInvalid = sawInvalid || strings.Contains(r, "name is required")
	}
	if !sawMalformed || !sawForeign || !sawInvalid {
		t.Errorf("dead-letter reasons = %v, want a malformed, a foreign-clinic and an invalid-content reason", reasons)
	}
	var good patient
	if code := call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/8", c.person, nil, &good); code != 200 || good.Data.Name != "good one" {
		t.Errorf("valid change of the mixed batch: %d %+v, want applied", code, good)
	}
	// Valid changes keep flowing after the poison.
	var more patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "After poison"}), &more); code != 201 {
		t.Fatalf("create after poison: %d", code)
	}
	testenv.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		var p patient
		if code := call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/"+more.ID, c.person, nil, &p); code != 200 {
			return fmt.Errorf("cloud GET: %d", code)
		}
		return nil
	})
	var foreignPatient patient
	if code := call(t, "GET", s.cloud[0]+"/v1/clinics/"+other.ID+"/patients/6", other.person, nil, &foreignPatient); code != 404 {
		t.Errorf("forged change reached the other clinic: %d %+v", code, foreignPatient)
	}
}
