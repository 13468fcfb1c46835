package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/testenv"
)

// TestUnsyncBothSides (M7): a record un-synced from the clinic or from the
// cloud becomes a tombstone in the cloud while the clinic keeps its copy,
// excluded; syncing it again brings it back (no stuck tombstone).
func TestUnsyncBothSides(t *testing.T) {
	parallel(t)
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
	if code := call(t, "POST", cloud.prefix+"patients/"+b.ID+"/unsync", c.person, nil, nil); code != 200 {
		t.Fatalf("cloud unsync: %d", code)
	}
	converged(t, c, cloud, 60*time.Second)
	for _, id := range []string{a.ID, b.ID} {
		var inCloud, here patient
		call(t, "GET", cloud.prefix+"patients/"+id, c.person, nil, &inCloud)
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
		call(t, "GET", cloud.prefix+"patients/"+a.ID, c.person, nil, &inCloud)
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

// TestUnsyncedFileDeletedThenResynced (M7): the file of an image un-synced
// in the clinic is deleted from S3 after the grace period (1s here); syncing
// the image again makes sc-local upload the file again, so the cloud has
// it, verified, and it downloads with the right SHA-256.
func TestUnsyncedFileDeletedThenResynced(t *testing.T) {
	parallel(t)
	s := newStackWith(t, stackOpts{cloudNodes: 1, cloudEnv: []string{
		"SC_CLOUD_FILES_UNSYNCED_GRACE=1s", "SC_CLOUD_FILES_SWEEP_INTERVAL=1s"}})
	c := s.enroll(t, "Yangyang Dental")
	dir := t.TempDir()
	s.startLocal(t, c, dir)
	cloud := cloudSide(s.cloud[0], c)
	var p patient
	call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "File Owner"}), &p)
	var st, img record
	call(t, "POST", c.base+"/v1/studies", "", map[string]any{"data": map[string]any{"patient_id": p.ID, "study_date": "2026-10-01"}}, &st)
	if code := call(t, "POST", c.base+"/v1/images", "", map[string]any{"data": map[string]any{"study_id": st.ID, "modality": "PANO", "study_date": "2026-10-01"}}, &img); code != 201 {
		t.Fatalf("create image: %d", code)
	}
	path, sum := randomFile(t, dir, 50_000)
	if code := call(t, "POST", c.base+"/v1/files", "", map[string]any{"path": path, "image_id": img.ID}, nil); code != 202 {
		t.Fatalf("import file: %d", code)
	}
	fileState := func(want string) {
		t.Helper()
		testenv.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
			var f struct{ State string }
			if code := call(t, "GET", cloud.prefix+"files/"+sum, c.Token, nil, &f); code != 200 || f.State != want {
				return fmt.Errorf("cloud file: %d %s, want %s", code, f.State, want)
			}
			return nil
		})
	}
	fileState("present")
	converged(t, c, cloud, 60*time.Second)

	if code := call(t, "POST", c.base+"/v1/images/"+img.ID+"/unsync", "", nil, nil); code != 200 {
		t.Fatalf("unsync: %d", code)
	}
	fileState("deleted")
	var e struct{ Code string }
	if code := call(t, "GET", cloud.prefix+"files/"+sum+"/download", c.Token, nil, &e); code/100 == 2 {
		t.Fatalf("the deleted file still downloads: %d", code)
	}

	if code := call(t, "PUT", c.base+"/v1/images/"+img.ID+"/sync", "", map[string]string{"choice": ""}, nil); code != 200 {
		t.Fatalf("re-sync: %d", code)
	}
	fileState("present")
	converged(t, c, cloud, 60*time.Second)
	var dl struct {
		Get struct {
			Method, URL string
			Header      map[string]string
		} `json:"get"`
		Code, Message string // of a refusal
	}
	if code := call(t, "GET", cloud.prefix+"files/"+sum+"/download", c.Token, nil, &dl); code != 200 {
		t.Fatalf("download URL: %d %s: %s", code, dl.Code, dl.Message)
	}
	got := fetchSHA(t, dl.Get.URL, dl.Get.Header)
	if got != sum {
		t.Fatalf("downloaded sha256 %s, want %s", got, sum)
	}
}

// fetchSHA GETs a presigned URL and returns the body's SHA-256.
func fetchSHA(t *testing.T, url string, header map[string]string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET presigned: %s", resp.Status)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
