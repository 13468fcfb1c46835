package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// TestUnsyncBothSides (M7): a record un-synced from the clinic or from the
// cloud becomes a tombstone in the cloud while the clinic keeps its copy,
// excluded; syncing it again brings it back (no stuck tombstone).
func TestUnsyncBothSides(t *testing.T) {
	t.Parallel()
	s := newStack(t, 1)
	c := s.enroll(t, "Sokcho Dental")
	s.startLocal(t, c, t.TempDir())
	cloud := cloudSide(s.cloud[0], c)
	var a, b patient
	call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Unsynced Here"}), &a)
	call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Unsynced There"}), &b)
	converged(t, c, cloud, 60*time.Second)

	if code := call(t, "POST", c.base+"/v1/patients/"+a.ID+"/unsync", "", nil, nil); code != 200 {
		t.Fatalf("clinic unsync: %d", code)
	}
	if code := call(t, "POST", cloud.prefix+"patients/"+b.ID+"/unsync", c.Token, nil, nil); code != 200 {
		t.Fatalf("cloud unsync: %d", code)
	}
	converged(t, c, cloud, 60*time.Second)
	for _, id := range []string{a.ID, b.ID} {
		var inCloud, here patient
		call(t, "GET", cloud.prefix+"patients/"+id, c.Token, nil, &inCloud)
		call(t, "GET", c.base+"/v1/patients/"+id, "", nil, &here)
		if !inCloud.Deleted || here.Deleted || here.SyncState != "excluded" || here.Data.Name == "" {
			t.Fatalf("after unsync: cloud %+v, clinic %+v; want a cloud tombstone and the clinic's copy excluded", inCloud, here)
		}
	}
	// A local edit of an un-synced record stays here.
	if code := call(t, "PUT", c.base+"/v1/patients/"+a.ID, "", save("", map[string]string{"name": "Edited Locally Only"}), nil); code != 200 {
		t.Fatalf("edit: %d", code)
	}
	converged(t, c, cloud, 30*time.Second)

	// Sync it again: it is back in the cloud with the clinic's content.
	if code := call(t, "PUT", c.base+"/v1/patients/"+a.ID+"/sync", "", map[string]string{"choice": ""}, nil); code != 200 {
		t.Fatalf("re-sync: %d", code)
	}
	testenv.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() error {
		var inCloud patient
		call(t, "GET", cloud.prefix+"patients/"+a.ID, c.Token, nil, &inCloud)
		if inCloud.Deleted || inCloud.Data.Name != "Edited Locally Only" {
			return fmt.Errorf("cloud copy %+v", inCloud)
		}
		return nil
	})
	converged(t, c, cloud, 60*time.Second)
	var here patient
	call(t, "GET", c.base+"/v1/patients/"+a.ID, "", nil, &here)
	if here.SyncState != "synced" {
		t.Fatalf("re-synced record is %s, want synced", here.SyncState)
	}
}
