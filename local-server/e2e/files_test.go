package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/wire"
)

func randomFile(t *testing.T, dir string, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	p := filepath.Join(dir, hex.EncodeToString(sum[:4])+".dcm")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(sum[:])
}

type transferRow struct {
	ID        int64  `json:"id"`
	Direction string `json:"direction"`
	SHA256    string `json:"sha256"`
	Path      string `json:"path"`
	State     string `json:"state"`
	BytesDone int64  `json:"bytes_done"`
	Reason    string `json:"reason"`
}

// TestImageFilesBothWays (M9, M16, M19): a file imported for an image in the
// clinic goes to S3 through presigned URLs and is verified present in the
// cloud; a file a cloud client uploads for a cloud-made image reaches the
// clinic by presigned GET, verified by SHA-256; an original never changes.
func TestImageFilesBothWays(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Suwon Dental Imaging")
	dataDir := t.TempDir()
	s.startLocal(t, c, dataDir)
	cloud := cloudSide(s.cloud[0], c)

	w := newWorkload(t, localSide(c), 41)
	w.mu.Lock()
	w.create(wire.KindPatient)
	w.create(wire.KindStudy)
	w.mu.Unlock()
	study := w.live[wire.KindStudy][0]
	img := records.Sample(wire.KindImage, 1, map[wire.Kind]ids.ID{wire.KindStudy: study}).(records.Image)
	img.Modality = "CBCT"
	var image record
	if code := call(t, "POST", c.base+"/v1/images", "", map[string]any{"data": img}, &image); code != 201 {
		t.Fatalf("create image: %d", code)
	}

	// Clinic → S3.
	path, sum := randomFile(t, t.TempDir(), 20<<20)
	var imp struct {
		Transfer transferRow `json:"transfer"`
	}
	if code := call(t, "POST", c.base+"/v1/files", "", map[string]any{"path": path, "image_id": image.ID, "content_type": "application/dicom"}, &imp); code != 202 {
		t.Fatalf("import: %d %+v", code, imp)
	}
	if imp.Transfer.SHA256 != sum {
		t.Fatalf("transfer sha256 = %s, want %s", imp.Transfer.SHA256, sum)
	}
	testenv.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
		var f struct{ State string }
		if code := call(t, "GET", cloud.prefix+"files/"+sum, c.Token, nil, &f); code != 200 || f.State != "present" {
			return fmt.Errorf("cloud file: %d %+v", code, f)
		}
		var l struct{ Items []transferRow }
		call(t, "GET", c.base+"/v1/files?sha256="+sum, "", nil, &l)
		if len(l.Items) != 1 || l.Items[0].State != "present" {
			return fmt.Errorf("clinic transfer: %+v", l.Items)
		}
		return nil
	})
	// The image's metadata names its original, on both sides.
	converged(t, c, cloud, 60*time.Second)
	var got struct {
		Data records.Image `json:"data"`
	}
	call(t, "GET", cloud.prefix+"images/"+image.ID, c.person, nil, &got)
	if got.Data.SHA256 != sum || got.Data.Size != 20<<20 {
		t.Fatalf("cloud image = %+v, want sha256 %s", got.Data, sum)
	}
	// The original is immutable: another file for the same image is refused.
	other, _ := randomFile(t, t.TempDir(), 1000)
	var e struct{ Code string }
	if code := call(t, "POST", c.base+"/v1/files", "", map[string]any{"path": other, "image_id": image.ID}, &e); code != 409 || e.Code != "immutable_original" {
		t.Fatalf("second original = %d %+v, want 409 immutable_original", code, e)
	}

	// Cloud client → S3 → clinic.
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	h := sha256.Sum256(data)
	cloudSum := hex.EncodeToString(h[:])
	var begin filekey.BeginResponse
	if code := call(t, "POST", cloud.prefix+"files/"+cloudSum+"/upload", c.Token, filekey.BeginRequest{Size: int64(len(data)), ContentType: "image/jpeg"}, &begin); code != 200 || begin.Put == nil {
		t.Fatalf("cloud begin: %d %+v", code, begin)
	}
	req, _ := http.NewRequestWithContext(context.Background(), begin.Put.Method, begin.Put.URL, bytes.NewReader(data))
	begin.Put.Request(req.Header)
	req.ContentLength = int64(len(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("presigned PUT: %d %s", resp.StatusCode, body)
	}
	if code := call(t, "POST", cloud.prefix+"files/"+cloudSum+"/upload/complete", c.Token, nil, nil); code != 200 {
		t.Fatalf("complete: %d", code)
	}
	photo := records.Sample(wire.KindImage, 2, map[wire.Kind]ids.ID{wire.KindStudy: study}).(records.Image)
	photo.Modality, photo.SHA256, photo.Size, photo.ContentType = "PHOTO", cloudSum, int64(len(data)), "image/jpeg"
	if code := call(t, "POST", cloud.prefix+"images", c.person, map[string]any{"data": photo}, nil); code != 201 {
		t.Fatalf("cloud image: %d", code)
	}
	dst := filepath.Join(dataDir, "files", cloudSum)
	testenv.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
		var l struct{ Items []transferRow }
		call(t, "GET", c.base+"/v1/files?sha256="+cloudSum, "", nil, &l)
		if len(l.Items) != 1 || l.Items[0].State != "present" || l.Items[0].Direction != "down" {
			return fmt.Errorf("clinic download: %+v", l.Items)
		}
		return nil
	})
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != cloudSum {
		t.Fatal("downloaded file's SHA-256 differs")
	}
	var st struct {
		Files struct{ Present, Failed int } `json:"files"`
	}
	call(t, "GET", c.base+"/v1/status", "", nil, &st)
	if st.Files.Present != 2 || st.Files.Failed != 0 {
		t.Fatalf("status files = %+v, want 2 present", st.Files)
	}
}

// TestUploadResumesAfterKill (M9): sc-local is killed with SIGKILL halfway
// through a multipart upload; restarted, it finishes without sending again
// a part S3 already holds.
func TestUploadResumesAfterKill(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Cheongju Imaging")
	s.localEnv = []string{"SC_LOCAL_FILES_BYTES_PER_SECOND=" + fmt.Sprint(16<<20)} // a clinic uplink, so the kill lands midway
	s.startLocal(t, c, t.TempDir())
	cloud := cloudSide(s.cloud[0], c)

	w := newWorkload(t, localSide(c), 51)
	w.mu.Lock()
	w.create(wire.KindPatient)
	w.create(wire.KindStudy)
	w.mu.Unlock()
	img := records.Sample(wire.KindImage, 1, map[wire.Kind]ids.ID{wire.KindStudy: w.live[wire.KindStudy][0]}).(records.Image)
	var image record
	if code := call(t, "POST", c.base+"/v1/images", "", map[string]any{"data": img}, &image); code != 201 {
		t.Fatalf("create image: %d", code)
	}
	const size = 192 << 20 // 12 parts of 16 MiB
	path, sum := randomFile(t, t.TempDir(), size)
	if code := call(t, "POST", c.base+"/v1/files", "", map[string]any{"path": path, "image_id": image.ID}, nil); code != 202 {
		t.Fatalf("import: %d", code)
	}
	testenv.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		var l struct{ Items []transferRow }
		call(t, "GET", c.base+"/v1/files?sha256="+sum, "", nil, &l)
		if len(l.Items) != 1 || l.Items[0].BytesDone < size*45/100 {
			return fmt.Errorf("transfer %+v", l.Items)
		}
		return nil
	})
	c.proc.kill9(t)

	var parts struct {
		PartCount int `json:"part_count"`
		Parts     []struct {
			Number int `json:"number"`
		} `json:"parts"`
	}
	// A part whose body had fully arrived when the process died may still
	// be completing in S3: read until two reads agree.
	stored := -1
	testenv.CheckFor(t, 20*time.Second, 500*time.Millisecond, func() error {
		if code := call(t, "GET", cloud.prefix+"files/"+sum+"/upload/parts", c.Token, nil, &parts); code != 200 {
			return fmt.Errorf("parts: %d", code)
		}
		if n := len(parts.Parts); n != stored {
			stored = n
			return fmt.Errorf("S3 holds %d parts, settling", n)
		}
		return nil
	})
	if stored == 0 || stored >= parts.PartCount {
		t.Fatalf("S3 holds %d of %d parts at the kill, want some but not all", stored, parts.PartCount)
	}

	c.proc.restart(t)
	waitReady(t, c.proc, c.base)
	testenv.CheckFor(t, 120*time.Second, 250*time.Millisecond, func() error {
		var f struct{ State string }
		if code := call(t, "GET", cloud.prefix+"files/"+sum, c.Token, nil, &f); code != 200 || f.State != "present" {
			return fmt.Errorf("cloud file: %d %+v", code, f)
		}
		return nil
	})
	sent := int(metric(t, c.base, "scsync_local_file_parts_sent_total"))
	t.Logf("S3 held %d of %d parts at the kill; the restarted sc-local sent %d", stored, parts.PartCount, sent)
	if sent != parts.PartCount-stored {
		t.Fatalf("restarted sc-local sent %d parts, want exactly the %d missing ones", sent, parts.PartCount-stored)
	}
}
