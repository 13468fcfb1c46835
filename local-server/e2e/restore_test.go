package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

// TestBackupWipeRestore (M27, issue 6): sc-local backs its database up to
// S3; then the clinic keeps working and the cloud makes changes; the clinic
// machine dies and its whole directory is lost; `sc-local restore` on the
// replacement fetches the backup, and the restarted server catches up from
// the cloud — the clinic is identical to what it was (digest), including
// what happened after the backup, and gets its image files back. The cloud
// notices the clinic came back older than it had acknowledged.
func TestBackupWipeRestore(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Gangneung Dental")
	dir := t.TempDir()
	s.startLocal(t, c, dir)
	cloud := cloudSide(s.cloud[0], c)

	w := newWorkload(t, localSide(c), 77)
	w.mu.Lock()
	for range 6 {
		w.create(wire.KindPatient)
	}
	w.create(wire.KindStudy)
	w.mu.Unlock()
	study := w.live[wire.KindStudy][0]
	// Image originals the clinic's devices wrote, in the clinic directory.
	pacs := filepath.Join(dir, "pacs")
	if err := os.MkdirAll(pacs, 0o750); err != nil {
		t.Fatal(err)
	}
	sums := map[string]bool{}
	for i := range 3 {
		img := records.Sample(wire.KindImage, i, map[wire.Kind]ids.ID{wire.KindStudy: study}).(records.Image)
		var image record
		if code := call(t, "POST", c.base+"/v1/images", "", map[string]any{"data": img}, &image); code != 201 {
			t.Fatalf("create image: %d", code)
		}
		path, sum := randomFile(t, pacs, 100_000+i*7_000)
		if code := call(t, "POST", c.base+"/v1/files", "", map[string]any{"path": path, "image_id": image.ID}, nil); code != 202 {
			t.Fatalf("import file: %d", code)
		}
		sums[sum] = true
	}
	testenv.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
		for sum := range sums {
			var f struct{ State string }
			if code := call(t, "GET", cloud.prefix+"files/"+sum, c.Token, nil, &f); code != 200 || f.State != "present" {
				return fmt.Errorf("cloud file %s: %d %+v", sum, code, f)
			}
		}
		return nil
	})
	converged(t, c, cloud, 60*time.Second)

	// The backup.
	var bk struct {
		ID         string `json:"id"`
		State      string `json:"state"`
		Records    int64  `json:"records"`
		Checkpoint int64  `json:"checkpoint"`
		Size       int64  `json:"size"`
	}
	if code := call(t, "POST", c.base+"/v1/backup", "", nil, &bk); code != 201 || bk.State != "complete" {
		t.Fatalf("backup: %d %+v", code, bk)
	}
	if bk.Records != 10 || bk.Checkpoint == 0 || bk.Size == 0 {
		t.Fatalf("backup %+v: want 10 records and a checkpoint", bk)
	}
	var st struct {
		Last *struct{ ID string } `json:"last"`
	}
	if call(t, "GET", c.base+"/v1/backup", "", nil, &st); st.Last == nil || st.Last.ID != bk.ID {
		t.Fatalf("backup status %+v, want the last backup %s", st, bk.ID)
	}

	// What S3 holds is ciphertext: fetched raw through the cloud's presigned
	// GET, it is an age file, neither SQLite nor gzip.
	var dl struct {
		Get struct {
			Method string            `json:"method"`
			URL    string            `json:"url"`
			Header map[string]string `json:"header"`
		} `json:"get"`
	}
	if code := call(t, "GET", cloud.prefix+"backups/latest/download", c.Token, nil, &dl); code != 200 || dl.Get.URL == "" {
		t.Fatalf("backup download: %d %+v", code, dl)
	}
	raw := fetchRaw(t, dl.Get.URL, dl.Get.Header)
	if !strings.HasPrefix(string(raw), "age-encryption.org/v1\n") || strings.Contains(string(raw), "SQLite format 3") ||
		(len(raw) > 1 && raw[0] == 0x1f && raw[1] == 0x8b) {
		t.Fatalf("the backup object in S3 starts %q: want age ciphertext", raw[:min(len(raw), 24)])
	}
	// IT's copy of the recovery key, kept off the machine.
	keyCopy := filepath.Join(t.TempDir(), "backup-identity.txt")
	if b, err := os.ReadFile(filepath.Join(dir, "backup-identity.txt")); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(keyCopy, b, 0o600); err != nil {
		t.Fatal(err)
	}

	// After the backup: the clinic and the cloud both change things.
	var local, remote patient
	if code := call(t, "POST", c.base+"/v1/patients", "", save("", map[string]string{"name": "Made After Backup (clinic)"}), &local); code != 201 {
		t.Fatalf("clinic create: %d", code)
	}
	if code := call(t, "POST", cloud.prefix+"patients", c.person, save("", map[string]string{"name": "Made After Backup (cloud)"}), &remote); code != 201 {
		t.Fatalf("cloud create: %d", code)
	}
	var edited patient
	first := w.live[wire.KindPatient][0]
	call(t, "GET", cloud.prefix+"patients/"+first.String(), c.person, nil, &edited)
	if code := call(t, "PUT", cloud.prefix+"patients/"+first.String(), c.person, save(edited.Version, map[string]string{"name": "Renamed In The Cloud"}), nil); code != 200 {
		t.Fatalf("cloud edit: %d", code)
	}
	before := converged(t, c, cloud, 60*time.Second)
	// The clinic acknowledges what it applied with its next pull (every 2s
	// here): wait for it, so the cloud knows how far the lost machine got.
	testenv.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		cl := adminClinic(t, s, c.ID)
		if cl.AckedSeq == 0 || cl.AckedSeq < cl.LastSeq {
			return fmt.Errorf("clinic acknowledged cloud_seq %d of %d", cl.AckedSeq, cl.LastSeq)
		}
		return nil
	})

	// The machine dies and its directory is gone.
	c.proc.kill9(t)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	restore := func(args ...string) (string, error) {
		cmd := exec.Command(s.localBin, append([]string{"restore"}, args...)...)
		cmd.Env = append(os.Environ(), c.proc.env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Without the recovery key the backup cannot be opened.
	if out, err := restore(); err == nil || !strings.Contains(out, "recovery key") {
		t.Fatalf("restore without the recovery key = %v\n%s; want a refusal naming it", err, out)
	}
	out, err := restore("-identity", keyCopy)
	t.Logf("sc-local restore:\n%s", out)
	if err != nil || !strings.Contains(out, "restored backup "+bk.ID) {
		t.Fatalf("restore: %v", err)
	}
	// A second restore onto the restored database refuses to overwrite it.
	if out, err := restore("-identity", keyCopy); err == nil || !strings.Contains(out, "exists") {
		t.Fatalf("restore over a database = %v\n%s; want a refusal", err, out)
	}

	c.proc.restart(t)
	waitReady(t, c.proc, c.base)
	after := converged(t, c, cloud, 90*time.Second)
	if diff := diffDigests(before.Records, after.Records); diff != "" {
		t.Fatalf("the restored clinic differs from before the loss: %s", diff)
	}
	for _, id := range []string{local.ID, remote.ID} {
		if code := call(t, "GET", c.base+"/v1/patients/"+id, "", nil, nil); code != 200 {
			t.Fatalf("patient %s made after the backup is not in the restored clinic: %d", id, code)
		}
	}
	// Every image file is back on the clinic's disk, verified.
	testenv.CheckFor(t, 90*time.Second, 500*time.Millisecond, func() error {
		for sum := range sums {
			b, err := os.ReadFile(filepath.Join(dir, "files", sum))
			if err != nil {
				return err
			}
			got := sha256.Sum256(b)
			if hex.EncodeToString(got[:]) != sum {
				return fmt.Errorf("file %s has the wrong content", sum)
			}
		}
		return nil
	})
	// The cloud saw the clinic come back older than it had acknowledged.
	if cl := adminClinic(t, s, c.ID); cl.Rewinds < 1 {
		t.Fatalf("the cloud did not notice the clinic came back older: %+v", cl)
	}
}

type adminClinicView struct {
	ID       string `json:"id"`
	LastSeq  int64  `json:"last_seq"`
	AckedSeq int64  `json:"acked_seq"`
	Rewinds  int64  `json:"rewinds"`
}

// adminClinic reads a clinic as the cloud operator sees it.
func adminClinic(t *testing.T, s *stack, id string) adminClinicView {
	t.Helper()
	var list struct {
		Clinics []adminClinicView `json:"clinics"`
	}
	call(t, "GET", s.cloud[0]+"/v1/admin/clinics", s.adminToken, nil, &list)
	for _, cl := range list.Clinics {
		if cl.ID == id {
			return cl
		}
	}
	t.Fatalf("clinic %s not listed", id)
	return adminClinicView{}
}

// fetchRaw GETs a presigned URL and returns the body.
func fetchRaw(t *testing.T, url string, header map[string]string) []byte {
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
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET backup object: %d %v", resp.StatusCode, err)
	}
	return b
}
