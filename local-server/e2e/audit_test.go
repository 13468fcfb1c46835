package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

type auditEntry struct {
	Seq     int64  `json:"seq"`
	Actor   string `json:"actor"`
	Action  string `json:"action"`
	Kind    string `json:"kind"`
	Target  string `json:"target"`
	Outcome int    `json:"outcome"`
	Hash    string `json:"hash"`
}

// TestAuditReplicatesToCloud: what a person does in the clinic is in the
// clinic's audit chain, and the same chain (same hashes) reaches the cloud,
// where it verifies; the person's account replicates too, so the same
// person logs in to the cloud.
func TestAuditReplicatesToCloud(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Audit Dental")
	s.startLocal(t, c, t.TempDir())
	var who struct {
		ID string `json:"id"`
	}
	if code := call(t, "POST", c.base+"/v1/users", "", map[string]string{"username": "dr.audit", "role": "editor", "password": "pw-dr.audit-long"}, &who); code != 201 {
		t.Fatalf("add person: %d", code)
	}
	var sess struct {
		Token string `json:"token"`
	}
	if code := call(t, "POST", c.base+"/v1/login", "-", map[string]string{"username": "dr.audit", "password": "pw-dr.audit-long"}, &sess); code != 200 {
		t.Fatalf("login: %d", code)
	}
	var p patient
	if code := call(t, "POST", c.base+"/v1/patients", sess.Token, save("", map[string]string{"name": "Audited"}), &p); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if code := call(t, "GET", c.base+"/v1/patients/"+p.ID, sess.Token, nil, nil); code != 200 {
		t.Fatalf("read: %d", code)
	}
	var local struct{ Items []auditEntry }
	call(t, "GET", c.base+"/v1/audit", "", nil, &local)
	want := map[string]bool{"login": false, "create": false, "read": false}
	for _, e := range local.Items {
		if e.Actor == who.ID {
			want[e.Action] = true
		}
	}
	for a, ok := range want {
		if !ok {
			t.Errorf("clinic audit lacks %s by %s: %+v", a, who.ID, local.Items)
		}
	}
	testenv.CheckFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		var cloud struct{ Items []auditEntry }
		call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/audit?side=local", s.adminToken, nil, &cloud)
		if len(cloud.Items) < len(local.Items) {
			return fmt.Errorf("cloud holds %d of the clinic's %d entries", len(cloud.Items), len(local.Items))
		}
		for i, e := range local.Items {
			if cloud.Items[i].Hash != e.Hash {
				return fmt.Errorf("entry %d differs in the cloud", e.Seq)
			}
		}
		return nil
	})
	var v struct {
		OK      bool  `json:"ok"`
		Entries int64 `json:"entries"`
	}
	call(t, "GET", s.cloud[0]+"/v1/clinics/"+c.ID+"/audit/verify?side=local", s.adminToken, nil, &v)
	if !v.OK || v.Entries < int64(len(local.Items)) {
		t.Errorf("cloud verify of the clinic's chain = %+v", v)
	}
	// The account replicated: the same person logs in to the cloud.
	testenv.CheckFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		if code := call(t, "POST", s.cloud[0]+"/v1/login", "-", map[string]string{"clinic": c.ID, "username": "dr.audit", "password": "pw-dr.audit-long"}, nil); code != 200 {
			return fmt.Errorf("cloud login: %d", code)
		}
		return nil
	})
}
