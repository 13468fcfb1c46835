package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// savedVersion is one entry of a record's history (either side).
type savedVersion struct {
	Version     string `json:"version"`
	Origin      string `json:"origin"`
	SavedBy     string `json:"saved_by"`
	SavedByName string `json:"saved_by_name"`
}

// history waits until the record's history at url has version v and
// returns that entry.
func history(t *testing.T, url, token, v string) savedVersion {
	t.Helper()
	var found savedVersion
	testenv.CheckFor(t, 60*time.Second, 300*time.Millisecond, func() error {
		var h struct {
			Items []savedVersion `json:"items"`
		}
		if code := call(t, "GET", url, token, nil, &h); code != 200 {
			return fmt.Errorf("GET %s: %d", url, code)
		}
		for _, e := range h.Items {
			if e.Version == v {
				found = e
				return nil
			}
		}
		return fmt.Errorf("%s has no version %s yet: %+v", url, v, h.Items)
	})
	return found
}

// TestSavedByBothSides (M18, who saved which version): a person's save in
// the clinic is recorded with their id, and the cloud's history of the
// record names the same person; a person's save in the cloud (in an edit
// session) reaches the clinic's history with theirs. The id is the
// authenticated person's: a save with the clinic's service token names no
// one, and nothing the client sends changes it.
func TestSavedByBothSides(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Saved By Dental")
	s.startLocal(t, c, t.TempDir())
	var local struct {
		ID string `json:"id"`
	}
	if code := call(t, "POST", c.base+"/v1/users", "", map[string]string{"username": "dr.clinic", "role": "editor", "password": "pw-dr.clinic-long"}, &local); code != 201 {
		t.Fatalf("add clinic person: %d", code)
	}
	var sess struct {
		Token string `json:"token"`
		User  struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if code := call(t, "POST", c.base+"/v1/login", "-", map[string]string{"username": "dr.clinic", "password": "pw-dr.clinic-long"}, &sess); code != 200 {
		t.Fatalf("clinic login: %d", code)
	}
	cloudTok := s.login(t, c, "dr.cloud", "editor")
	var cloudMe struct {
		UserID string `json:"user_id"`
	}
	call(t, "GET", s.cloud[0]+"/v1/me", cloudTok, nil, &cloudMe)

	// The clinic person creates and edits a patient; a client cannot name
	// who saved (the field is refused).
	var p patient
	if code := call(t, "POST", c.base+"/v1/patients", sess.Token, save("", map[string]string{"name": "Who Saved"}), &p); code != 201 {
		t.Fatalf("create: %d", code)
	}
	forged := save(p.Version, map[string]string{"name": "Forged"})
	forged["saved_by"], forged["saved_by_name"] = "1", "mallory"
	if code := call(t, "PUT", c.base+"/v1/patients/"+p.ID, sess.Token, forged, nil); code != 400 {
		t.Errorf("update naming its own saver: %d, want 400", code)
	}
	var upd patient
	if code := call(t, "PUT", c.base+"/v1/patients/"+p.ID, sess.Token, save(p.Version, map[string]string{"name": "Who Saved Twice"}), &upd); code != 200 {
		t.Fatalf("update: %d", code)
	}
	localURL := c.base + "/v1/patients/" + p.ID + "/versions"
	cloudURL := s.cloud[0] + "/v1/clinics/" + c.ID + "/patients/" + p.ID + "/versions"
	for _, v := range []string{p.Version, upd.Version} {
		if h := history(t, localURL, sess.Token, v); h.SavedBy != local.ID || h.SavedByName != "dr.clinic" {
			t.Errorf("clinic history of %s = %+v, want dr.clinic (%s)", v, h, local.ID)
		}
		if h := history(t, cloudURL, cloudTok, v); h.SavedBy != local.ID || h.SavedByName != "dr.clinic" || h.Origin != "local" {
			t.Errorf("cloud history of %s = %+v, want dr.clinic (%s) from the clinic", v, h, local.ID)
		}
	}

	// The cloud person saves in an edit session (this stack has no lockd:
	// "edit anyway"): the clinic's history names them.
	var open struct {
		Session string `json:"session"`
	}
	if code := call(t, "POST", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/"+p.ID+"/edit", cloudTok, map[string]any{"client": "e2e", "anyway": true}, &open); code != 200 {
		t.Fatalf("cloud edit: %d", code)
	}
	var saved struct {
		Version string `json:"version"`
	}
	if code := call(t, "POST", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/"+p.ID+"/save", cloudTok,
		map[string]any{"session": open.Session, "data": map[string]string{"name": "Saved In The Cloud"}}, &saved); code != 200 {
		t.Fatalf("cloud save: %d", code)
	}
	call(t, "POST", s.cloud[0]+"/v1/clinics/"+c.ID+"/patients/"+p.ID+"/close", cloudTok, map[string]string{"session": open.Session}, nil)
	if h := history(t, cloudURL, cloudTok, saved.Version); h.SavedBy != cloudMe.UserID || h.SavedByName != "dr.cloud" || h.Origin != "cloud" {
		t.Errorf("cloud history of %s = %+v, want dr.cloud (%s)", saved.Version, h, cloudMe.UserID)
	}
	if h := history(t, localURL, sess.Token, saved.Version); h.SavedBy != cloudMe.UserID || h.SavedByName != "dr.cloud" || h.Origin != "cloud" {
		t.Errorf("clinic history of %s = %+v, want dr.cloud (%s)", saved.Version, h, cloudMe.UserID)
	}

	// A save with the clinic's service token (the CLI) names no person.
	var svc patient
	testenv.CheckFor(t, 60*time.Second, 300*time.Millisecond, func() error {
		var cur patient
		call(t, "GET", c.base+"/v1/patients/"+p.ID, "", nil, &cur)
		if cur.Version != saved.Version {
			return fmt.Errorf("clinic at %s, waiting for %s", cur.Version, saved.Version)
		}
		return nil
	})
	if code := call(t, "PUT", c.base+"/v1/patients/"+p.ID, "", save(saved.Version, map[string]string{"name": "By The Service"}), &svc); code != 200 {
		t.Fatalf("service update: %d", code)
	}
	if h := history(t, cloudURL, cloudTok, svc.Version); h.SavedBy != "" || h.SavedByName != "" {
		t.Errorf("cloud history of a service-token save = %+v, want no person", h)
	}
}
