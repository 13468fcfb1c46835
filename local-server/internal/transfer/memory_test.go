package transfer

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/filekey"
)

// maxRSS is the peak resident set an uploading process may reach, whatever
// the file size: parts stream from disk.
const maxRSS = 128 * filekey.MiB

// uploadInChild uploads a generated file of size bytes from a child
// process and checks the child's peak RSS (VmHWM) and the result.
func uploadInChild(t *testing.T, size, partSize int64) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("VmHWM is read from /proc")
	}
	c := startCloud(t, cloudOpts{partSize: partSize})
	dir := t.TempDir()
	start := time.Now()
	src, sha := makeFile(t, dir, size)
	t.Logf("generated %d MiB in %s", size/filekey.MiB, time.Since(start).Round(time.Millisecond))
	dbPath := filepath.Join(dir, "clinic.db")
	openDB(t, dbPath)
	child := runChild(t, map[string]string{"CHILD_DB": dbPath, "CHILD_URL": c.URL, "CHILD_TOKEN": c.Token,
		"CHILD_CLINIC": c.Clinic.String(), "CHILD_FILE": src, "CHILD_SHA": sha, "CHILD_SIZE": strconv.FormatInt(size, 10)})
	child.Stderr = os.Stderr
	start = time.Now()
	out, err := child.Output()
	res := parseChild(t, out)
	t.Logf("child uploaded %d MiB in %s (%.1fs in the child, %d parts): peak RSS %d MiB (race detector %v)",
		size/filekey.MiB, time.Since(start).Round(time.Millisecond), res.Seconds, res.PartsSent, res.VmHWMKiB/1024, raceEnabled)
	if err != nil || res.Err != "" {
		t.Fatalf("child: %v %s", err, res.Err)
	}
	if want := filekey.PartCount(size, partSize); res.PartsSent != int64(want) {
		t.Errorf("child sent %d parts, want %d", res.PartsSent, want)
	}
	if res.VmHWMKiB <= 0 || res.VmHWMKiB*1024 >= maxRSS {
		t.Errorf("peak RSS of the uploading process = %d KiB, want < %d MiB", res.VmHWMKiB, maxRSS/filekey.MiB)
	}
	f, err := c.Client.Stat(context.Background(), sha)
	if err != nil || f.State != filekey.StatePresent || f.Size != size {
		t.Fatalf("cloud Stat = %+v, %v; want present", f, err)
	}
	// Down into a second clinic directory, through a presigned GET, with
	// the same SHA-256.
	w := newWorker(t, c, Options{})
	dst := filepath.Join(t.TempDir(), "second-clinic-dir", "volume.dcm")
	down, err := w.EnqueueDownload(context.Background(), Download{SHA256: sha, Size: size, Path: dst})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := w.Process(context.Background(), down.ID); err != nil {
		t.Fatal(err)
	}
	got, n, err := HashFile(dst)
	if err != nil || got != sha || n != size {
		t.Fatalf("downloaded copy: sha256 %s, %d bytes, %v; want %s, %d", got, n, err, sha, size)
	}
	t.Logf("downloaded and verified %d MiB in %s", size/filekey.MiB, time.Since(start).Round(time.Millisecond))
	r := c.relayed(t)
	if r.RequestBytes+r.ResponseBytes > 256*1024 {
		t.Errorf("the cloud API carried %+v bytes, want only small JSON", r)
	}
	t.Logf("the cloud API relayed %d request and %d response bytes (JSON only) for %d MiB each way", r.RequestBytes, r.ResponseBytes, size/filekey.MiB)
}

func TestUploadMemoryFlat(t *testing.T) {
	t.Parallel()
	uploadInChild(t, 96*filekey.MiB, 8*filekey.MiB)
}

// TestUpload1GiB takes about 15 s on two cores under -race (generate,
// upload, the cloud's verify read); -short skips it.
func TestUpload1GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB upload skipped in -short mode")
	}
	t.Parallel()
	uploadInChild(t, filekey.GiB, 16*filekey.MiB)
}
