package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// s3Do sends an unsigned-body S3 request (DELETE or HEAD) to the test's
// MinIO, signed with AWS Signature V4 by hand: an S3 client independent of
// the product (sc-local's module carries no AWS SDK).
func s3Do(t *testing.T, method, bucket, key string) int {
	t.Helper()
	endpoint := testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000")
	access := testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync")
	secret := testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret")
	region := testenv.Env("SCSYNC_TEST_S3_REGION", "us-east-1")
	u, err := url.Parse(endpoint + "/" + bucket + "/" + key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	amzDate, day := now.Format("20060102T150405Z"), now.Format("20060102")
	empty := sha256.Sum256(nil)
	payload := hex.EncodeToString(empty[:])
	signed := "host;x-amz-content-sha256;x-amz-date"
	canonical := method + "\n" + u.EscapedPath() + "\n\n" + "host:" + u.Host + "\nx-amz-content-sha256:" + payload +
		"\nx-amz-date:" + amzDate + "\n\n" + signed + "\n" + payload
	scope := day + "/" + region + "/s3/aws4_request"
	ch := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(ch[:])
	mac := func(k []byte, s string) []byte { h := hmac.New(sha256.New, k); h.Write([]byte(s)); return h.Sum(nil) }
	k := mac(mac(mac(mac([]byte("AWS4"+secret), day), region), "s3"), "aws4_request")
	req, err := http.NewRequestWithContext(context.Background(), method, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-amz-date", amzDate)
	req.Header.Set("x-amz-content-sha256", payload)
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
		access, scope, signed, hex.EncodeToString(mac(k, toSign))))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestVerifyFilesFindsAndRepairs (issue 16 #4, file sweep): with two
// images' files uploaded, one object is deleted from S3 by an independent
// client and the other file removed from the clinic's disk; verify reports
// each (kind file, its SHA-256, the wrong side, what differs), repairs each
// through the transfer queue (upload again from the clinic's copy; download
// again from S3), and both files are back with their SHA-256.
func TestVerifyFilesFindsAndRepairs(t *testing.T) {
	parallel(t)
	s := newStack(t, 1)
	c := s.enroll(t, "Suwon Verify Files")
	dataDir := t.TempDir()
	s.startLocal(t, c, dataDir)
	cloud := cloudSide(s.cloud[0], c)

	w := newWorkload(t, localSide(c), 43)
	w.mu.Lock()
	w.create(wire.KindPatient)
	w.create(wire.KindStudy)
	w.mu.Unlock()
	study := w.live[wire.KindStudy][0]
	src := t.TempDir()
	sums := map[string]string{} // name → sha256
	paths := map[string]string{}
	for i, name := range []string{"s3 loses it", "disk loses it"} {
		img := records.Sample(wire.KindImage, i+1, map[wire.Kind]ids.ID{wire.KindStudy: study}).(records.Image)
		var image record
		if code := call(t, "POST", c.base+"/v1/images", "", map[string]any{"data": img}, &image); code != 201 {
			t.Fatalf("create image: %d", code)
		}
		p, sum := randomFile(t, src, 4000+i)
		if code := call(t, "POST", c.base+"/v1/files", "", map[string]any{"path": p, "image_id": image.ID, "content_type": "application/dicom"}, nil); code != 202 {
			t.Fatalf("import: %d", code)
		}
		sums[name], paths[name] = sum, p
	}
	for _, sum := range sums {
		waitCloudFile(t, c, cloud, sum)
	}
	converged(t, c, cloud, 60*time.Second)
	if r := runVerify(t, c, false); !r.Equal || r.Files != 2 {
		t.Fatalf("verify of a clean stack = %+v, want equal with 2 files", r)
	}

	// Divergence behind the servers' backs.
	key := "clinics/" + c.ID + "/sha256/" + sums["s3 loses it"]
	if code := s3Do(t, http.MethodDelete, s.bucket, key); code != 204 && code != 200 {
		t.Fatalf("S3 delete: %d", code)
	}
	if code := s3Do(t, http.MethodHead, s.bucket, key); code != 404 {
		t.Fatalf("S3 head after delete: %d, want 404", code)
	}
	if err := os.Remove(paths["disk loses it"]); err != nil {
		t.Fatal(err)
	}

	r := runVerify(t, c, false)
	want := map[string]string{
		sums["s3 loses it"]:   "cloud/state failed: object missing from S3/upload",
		sums["disk loses it"]: "clinic/missing from the clinic's disk/download",
	}
	got := map[string]string{}
	for _, d := range r.Differences {
		got[d.SHA256] = d.Side + "/" + d.What + "/" + d.Repair
		if d.Kind != "file" || d.Repaired {
			t.Errorf("difference %+v: want a file, not repaired", d)
		}
	}
	if r.Equal || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verify found %v, want %v", got, want)
	}

	r = runVerify(t, c, true)
	if len(r.Differences) != 2 {
		t.Fatalf("repair run found %+v, want the 2 differences", r.Differences)
	}
	for _, d := range r.Differences {
		if !d.Repaired || d.Error != "" {
			t.Errorf("repair of %+v failed", d)
		}
	}
	// S3 holds the file again, verified by the cloud, with its SHA-256.
	waitCloudFile(t, c, cloud, sums["s3 loses it"])
	if code := s3Do(t, http.MethodHead, s.bucket, key); code != 200 {
		t.Fatalf("S3 head after repair: %d, want 200", code)
	}
	var dl filekey.DownloadResponse
	if code := call(t, "GET", cloud.prefix+"files/"+sums["s3 loses it"]+"/download", c.Token, nil, &dl); code != 200 || dl.Get.URL == "" {
		t.Fatalf("download url: %d %+v", code, dl)
	}
	resp, err := http.Get(dl.Get.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if s := sha256.Sum256(b); err != nil || hex.EncodeToString(s[:]) != sums["s3 loses it"] {
		t.Fatalf("S3 copy after repair: SHA-256 differs (%v)", err)
	}
	// The clinic has the other file again, downloaded into its files dir.
	dst := filepath.Join(dataDir, "files", sums["disk loses it"])
	testenv.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
		if _, err := os.Stat(dst); err != nil {
			return err
		}
		return nil
	})
	if got := fileSHA(t, dst); got != sums["disk loses it"] {
		t.Fatalf("downloaded copy's SHA-256 = %s, want %s", got, sums["disk loses it"])
	}
	testenv.CheckFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		if r := runVerify(t, c, false); !r.Equal {
			return fmt.Errorf("after repair verify = %+v, want equal", r)
		}
		return nil
	})
}

func waitCloudFile(t *testing.T, c *clinic, cloud side, sum string) {
	t.Helper()
	testenv.CheckFor(t, 90*time.Second, 250*time.Millisecond, func() error {
		var f struct{ State string }
		if code := call(t, "GET", cloud.prefix+"files/"+sum, c.Token, nil, &f); code != 200 || f.State != "present" {
			return fmt.Errorf("cloud file %s: %d %+v", sum, code, f)
		}
		return nil
	})
}
