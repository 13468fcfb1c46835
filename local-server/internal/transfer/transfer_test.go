package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/testenv"
)

func TestHashFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		content, want string
	}{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for i, tt := range tests {
		p := filepath.Join(dir, strconv.Itoa(i))
		if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, n, err := HashFile(p)
		if err != nil || got != tt.want || n != int64(len(tt.content)) {
			t.Errorf("HashFile(%q) = %s, %d, %v; want %s", tt.content, got, n, err, tt.want)
		}
	}
	if _, _, err := HashFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("HashFile(missing) = %v, want ErrNotExist", err)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 20: time.Minute} {
		got := backoff(time.Second, time.Minute, n)
		if got < want*8/10 || got > want*12/10 {
			t.Errorf("backoff(1s, 1m, %d) = %s, want %s ± 20%%", n, got, want)
		}
	}
}

// newWorker is a worker of a fresh clinic database against c.
func newWorker(t *testing.T, c *cloud, opt Options) *Worker {
	t.Helper()
	db := openDB(t, filepath.Join(t.TempDir(), "clinic.db"))
	if opt.RetryBase == 0 {
		opt.RetryBase = 50 * time.Millisecond
	}
	return New(db, c.Client, opt, nil)
}

// stateLog records OnChange calls.
type stateLog struct {
	mu     sync.Mutex
	states map[int64][]string
}

func (l *stateLog) record(t Transfer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.states == nil {
		l.states = map[int64][]string{}
	}
	if s := l.states[t.ID]; len(s) == 0 || s[len(s)-1] != t.State {
		l.states[t.ID] = append(s, t.State)
	}
}

func (l *stateLog) of(id int64) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.states[id])
}

func TestSmallFileRoundTrip(t *testing.T) {
	t.Parallel()
	c := startCloud(t, cloudOpts{})
	var log stateLog
	w := newWorker(t, c, Options{OnChange: log.record})
	ctx := context.Background()
	dir := t.TempDir()
	src, sha := makeFile(t, dir, 300*1024+7)

	up, err := w.EnqueueUpload(ctx, Upload{Path: src, ContentType: "image/png"})
	if err != nil {
		t.Fatal(err)
	}
	if up.SHA256 != sha || up.Size != 300*1024+7 || up.State != StateQueued {
		t.Fatalf("EnqueueUpload = %+v, want queued with sha %s", up, sha)
	}
	if err := w.Process(ctx, up.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.Get(ctx, up.ID); got.State != StatePresent || got.BytesDone != got.Size || got.DoneAt == nil {
		t.Fatalf("after upload: %+v, want present", got)
	}
	if f, err := c.Client.Stat(ctx, sha); err != nil || f.State != filekey.StatePresent || f.ContentType != "image/png" {
		t.Fatalf("cloud Stat = %+v, %v; want present", f, err)
	}
	if got := log.of(up.ID); !slices.Equal(got, []string{StateUploading, StatePresent}) {
		t.Errorf("OnChange states = %v, want uploading, present", got)
	}
	sent := w.BytesSent()

	// The same file again, from another path and another worker: nothing
	// is sent, the cloud already has it.
	copyPath := filepath.Join(dir, "copy.img")
	b, _ := os.ReadFile(src)
	if err := os.WriteFile(copyPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	w2 := newWorker(t, c, Options{})
	again, err := w2.EnqueueUpload(ctx, Upload{Path: copyPath})
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Process(ctx, again.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := w2.Get(ctx, again.ID); got.State != StatePresent || w2.BytesSent() != 0 || w.BytesSent() != sent {
		t.Fatalf("re-upload: %+v, sent %d bytes; want present with nothing sent", got, w2.BytesSent())
	}

	// Down into another clinic directory, verified.
	dst := filepath.Join(dir, "down", "image.png")
	down, err := w.EnqueueDownload(ctx, Download{SHA256: sha, Path: dst})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Process(ctx, down.ID); err != nil {
		t.Fatal(err)
	}
	if got, n, err := HashFile(dst); err != nil || got != sha || n != up.Size {
		t.Fatalf("downloaded file: %s %d %v, want %s", got, n, err, sha)
	}
	if _, err := os.Stat(dst + partSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".part file left behind: %v", err)
	}
	if got := log.of(down.ID); !slices.Equal(got, []string{StateDownloading, StatePresent}) {
		t.Errorf("OnChange states = %v, want downloading, present", got)
	}
	counts, err := w.Counts(ctx)
	if err != nil || counts != (Counts{Present: 2}) {
		t.Errorf("Counts = %+v, %v; want 2 present", counts, err)
	}
	r := c.relayed(t)
	t.Logf("cloud API bytes: %+v for %d bytes up and %d down", r, up.Size, up.Size)
	if r.RequestBytes+r.ResponseBytes > 32*1024 {
		t.Errorf("the cloud relayed %+v bytes, want only small JSON", r)
	}
}

func TestMultipartUploadAndDownload(t *testing.T) {
	t.Parallel()
	c := startCloud(t, cloudOpts{})
	w := newWorker(t, c, Options{PartConcurrency: 3})
	ctx := context.Background()
	dir := t.TempDir()
	size := 64*filekey.MiB + 12345
	src, sha := makeFile(t, dir, size)
	start := time.Now()
	up, err := w.EnqueueUpload(ctx, Upload{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Process(ctx, up.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("64 MiB up in %s", time.Since(start).Round(time.Millisecond))
	if got := w.PartsSent(); got != 9 {
		t.Errorf("PartsSent = %d, want 9 (8 MiB parts)", got)
	}
	if got, _ := w.Get(ctx, up.ID); got.State != StatePresent || got.PartSize != 8*filekey.MiB {
		t.Fatalf("after upload: %+v", got)
	}
	var parts int64
	w.db.Model(&Part{}).Where("transfer_id = ?", up.ID).Count(&parts)
	if parts != 0 {
		t.Errorf("%d part rows left after the upload, want 0", parts)
	}
	dst := filepath.Join(dir, "files", "down.img")
	down, err := w.EnqueueDownload(ctx, Download{SHA256: sha, Size: size, Path: dst})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Process(ctx, down.ID); err != nil {
		t.Fatal(err)
	}
	if got, _, err := HashFile(dst); err != nil || got != sha {
		t.Fatalf("downloaded %s, %v; want %s", got, err, sha)
	}
	// A patient image is for the service account only.
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("downloaded file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
		}
		if fi, err := os.Stat(filepath.Dir(dst)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("download directory mode = %v, %v; want 0700", fi.Mode().Perm(), err)
		}
	}
	r := c.relayed(t)
	t.Logf("cloud API bytes: %+v for %d bytes up and down", r, size)
	if r.RequestBytes+r.ResponseBytes > 64*1024 || r.VerifyRead != size {
		t.Errorf("relayed %+v, want only JSON through the API and one verify read of %d", r, size)
	}
}

// TestResumeAfterKill: a child process uploads a multipart file slowly and
// is killed with SIGKILL half way; the upload resumes here without
// sending again the parts S3 already holds.
func TestResumeAfterKill(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("needs SIGKILL")
	}
	c := startCloud(t, cloudOpts{})
	ctx := context.Background()
	dir := t.TempDir()
	size := 64 * filekey.MiB
	src, sha := makeFile(t, dir, size)
	dbPath := filepath.Join(dir, "clinic.db")
	db := openDB(t, dbPath) // creates the schema

	child := runChild(t, map[string]string{"CHILD_DB": dbPath, "CHILD_URL": c.URL, "CHILD_TOKEN": c.Token,
		"CHILD_CLINIC": c.Clinic.String(), "CHILD_FILE": src, "CHILD_SHA": sha, "CHILD_SIZE": strconv.FormatInt(size, 10),
		"CHILD_BPS": strconv.FormatInt(16*filekey.MiB, 10)}) // 4 s for the whole file
	var out bytes.Buffer
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once S3 holds half the parts (the clinic's own record of
	// them is written in batches, so it may lag: S3's list is the truth a
	// resume starts from).
	testenv.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		l, err := c.Client.ListParts(ctx, sha)
		if err != nil {
			return err
		}
		if len(l.Parts) < 4 {
			return errors.New("fewer than 4 of 8 parts in S3")
		}
		return nil
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := child.Wait()
	if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child was not killed (%v): %s", err, out.String())
	}

	var tr Transfer
	if err := db.Take(&tr).Error; err != nil {
		t.Fatal(err)
	}
	if tr.State != StateUploading {
		t.Fatalf("after the kill the transfer is %s, want uploading", tr.State)
	}
	listed, err := c.Client.ListParts(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	stored := len(listed.Parts)
	t.Logf("killed with %d of 8 parts in S3, %d bytes done recorded", stored, tr.BytesDone)
	if stored < 4 || stored >= 8 {
		t.Fatalf("S3 holds %d parts after the kill, want 4..7", stored)
	}

	w := New(db, c.Client, Options{PartConcurrency: 2, RetryBase: 50 * time.Millisecond}, nil)
	if err := w.Process(ctx, tr.ID); err != nil {
		t.Fatal(err)
	}
	if got := w.PartsSent(); got != int64(8-stored) {
		t.Errorf("resume sent %d parts, want %d (only those S3 did not hold)", got, 8-stored)
	}
	if got, _ := w.Get(ctx, tr.ID); got.State != StatePresent {
		t.Fatalf("after resume: %+v", got)
	}
	if f, err := c.Client.Stat(ctx, sha); err != nil || f.State != filekey.StatePresent {
		t.Fatalf("cloud Stat = %+v, %v; want present (verified)", f, err)
	}
}

// cutTransport breaks the body of the first GET after limit bytes, as a
// dropped connection would.
type cutTransport struct {
	base   http.RoundTripper
	limit  int64
	cut    atomic.Bool
	ranges []string
	mu     sync.Mutex
}

func (c *cutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet {
		c.mu.Lock()
		c.ranges = append(c.ranges, r.Header.Get("Range"))
		c.mu.Unlock()
	}
	resp, err := c.base.RoundTrip(r)
	if err != nil || r.Method != http.MethodGet || !c.cut.CompareAndSwap(false, true) {
		return resp, err
	}
	resp.Body = &cutBody{ReadCloser: resp.Body, left: c.limit}
	return resp, nil
}

type cutBody struct {
	io.ReadCloser
	left int64
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

func TestDownloadResumes(t *testing.T) {
	t.Parallel()
	c := startCloud(t, cloudOpts{})
	ctx := context.Background()
	dir := t.TempDir()
	size := 20 * filekey.MiB
	src, sha := makeFile(t, dir, size)
	up := newWorker(t, c, Options{})
	tr, err := up.EnqueueUpload(ctx, Upload{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Process(ctx, tr.ID); err != nil {
		t.Fatal(err)
	}

	t.Run("connection drops", func(t *testing.T) {
		ct := &cutTransport{base: newS3HTTPClient().Transport, limit: 5 * filekey.MiB}
		w := newWorker(t, c, Options{HTTPClient: &http.Client{Transport: ct}})
		dst := filepath.Join(t.TempDir(), "img")
		d, err := w.EnqueueDownload(ctx, Download{SHA256: sha, Path: dst})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Process(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := HashFile(dst); got != sha {
			t.Fatalf("downloaded %s, want %s", got, sha)
		}
		want := []string{"", "bytes=" + strconv.FormatInt(5*filekey.MiB, 10) + "-"}
		if !slices.Equal(ct.ranges, want) {
			t.Errorf("GET ranges = %q, want %q (resume from the cut)", ct.ranges, want)
		}
	})

	t.Run("part file from a previous run", func(t *testing.T) {
		w := newWorker(t, c, Options{})
		dst := filepath.Join(t.TempDir(), "img")
		b, _ := os.ReadFile(src)
		if err := os.WriteFile(dst+partSuffix, b[:3*filekey.MiB+5], 0o600); err != nil {
			t.Fatal(err)
		}
		d, err := w.EnqueueDownload(ctx, Download{SHA256: sha, Path: dst})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Process(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := HashFile(dst); got != sha {
			t.Fatalf("downloaded %s, want %s", got, sha)
		}
	})

	t.Run("corrupt part file fails the check", func(t *testing.T) {
		w := newWorker(t, c, Options{})
		dst := filepath.Join(t.TempDir(), "img")
		if err := os.WriteFile(dst+partSuffix, bytes.Repeat([]byte{0xAB}, int(filekey.MiB)), 0o600); err != nil {
			t.Fatal(err)
		}
		d, err := w.EnqueueDownload(ctx, Download{SHA256: sha, Path: dst})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Process(ctx, d.ID); !errors.Is(err, ErrChecksum) {
			t.Fatalf("Process = %v, want ErrChecksum", err)
		}
		got, _ := w.Get(ctx, d.ID)
		if got.State != StateFailed || !strings.Contains(got.Reason, "checksum") {
			t.Errorf("transfer = %+v, want failed (checksum)", got)
		}
		for _, p := range []string{dst, dst + partSuffix} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists after a failed check: %v", filepath.Base(p), err)
			}
		}
		// Retry starts clean and succeeds.
		if err := w.Retry(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
		if err := w.Process(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := HashFile(dst); got != sha {
			t.Fatalf("downloaded %s after retry, want %s", got, sha)
		}
	})
}

func TestUploadOfChangedFileFails(t *testing.T) {
	t.Parallel()
	c := startCloud(t, cloudOpts{})
	w := newWorker(t, c, Options{})
	ctx := context.Background()
	src, _ := makeFile(t, t.TempDir(), 100*1024)
	tr, err := w.EnqueueUpload(ctx, Upload{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	// The file changes after it was queued (same size, other bytes).
	b, _ := os.ReadFile(src)
	b[500] ^= 0xFF
	if err := os.WriteFile(src, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.Process(ctx, tr.ID); !errors.Is(err, ErrLocalChanged) {
		t.Fatalf("Process = %v, want ErrLocalChanged", err)
	}
	if got, _ := w.Get(ctx, tr.ID); got.State != StateFailed || got.Attempts != 1 {
		t.Errorf("transfer = %+v, want failed after one attempt", got)
	}
	if f, err := c.Client.Stat(ctx, tr.SHA256); err != nil || f.State != filekey.StateUploading {
		t.Errorf("cloud Stat = %+v, %v; want still uploading (nothing stored)", f, err)
	}
}

func TestCloudUnreachableRetriesLater(t *testing.T) {
	t.Parallel()
	db := openDB(t, filepath.Join(t.TempDir(), "clinic.db"))
	w := New(db, NewClient("http://127.0.0.1:1", "token", testClinic, nil), Options{RetryBase: time.Minute}, nil)
	ctx := context.Background()
	src, _ := makeFile(t, t.TempDir(), 1000)
	tr, err := w.EnqueueUpload(ctx, Upload{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Process(ctx, tr.ID); err == nil {
		t.Fatal("Process with the cloud down succeeded")
	}
	got, _ := w.Get(ctx, tr.ID)
	if got.State != StateQueued || got.Attempts != 1 || got.Reason == "" || time.Until(got.NextAttemptAt) < 30*time.Second {
		t.Errorf("transfer = %+v, want queued again with a backoff of about a minute", got)
	}
	if err := w.Process(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("Process(999) = %v, want ErrNotFound", err)
	}
}

func TestWorkerRun(t *testing.T) {
	t.Parallel()
	c := startCloud(t, cloudOpts{})
	var log stateLog
	w := newWorker(t, c, Options{Concurrency: 3, Poll: 50 * time.Millisecond, OnChange: log.record})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	dir := t.TempDir()
	var shas []string
	var ids []int64
	for i := range 5 {
		src, sha := makeFile(t, dir, int64(1000*(i+1)))
		tr, err := w.EnqueueUpload(ctx, Upload{Path: src})
		if err != nil {
			t.Fatal(err)
		}
		shas, ids = append(shas, sha), append(ids, tr.ID)
	}
	// A download of a file the cloud only gets later waits and retries.
	late, lateSHA := makeFile(t, dir, 2*filekey.MiB)
	d, err := w.EnqueueDownload(ctx, Download{SHA256: lateSHA, Path: filepath.Join(dir, "late.down")})
	if err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		got, _ := w.Get(ctx, d.ID)
		if got.Attempts == 0 {
			return errors.New("download not tried yet")
		}
		return nil
	})
	if _, err := w.EnqueueUpload(ctx, Upload{Path: late}); err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		n, err := w.Counts(ctx)
		if err != nil {
			return err
		}
		if n.Present != 7 {
			return errors.New("not all present: " + strconv.Itoa(n.Present))
		}
		return nil
	})
	list, err := w.List(ctx, Filter{Direction: Up})
	if err != nil || len(list) != 6 {
		t.Fatalf("List(up) = %d, %v; want 6", len(list), err)
	}
	for i, id := range ids {
		if list[i].ID != id || list[i].SHA256 != shas[i] {
			t.Errorf("List[%d] = %d %s, want %d %s", i, list[i].ID, list[i].SHA256, id, shas[i])
		}
	}
	// OnChange runs after the state is stored: wait for the last call.
	testenv.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := log.of(d.ID); len(got) == 0 || got[len(got)-1] != StatePresent || !slices.Contains(got, StateQueued) {
			return fmt.Errorf("download states = %v, want queued (retry) … present", got)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("transfer: PUT part: %w", redact(&url.Error{Op: "Put",
		URL: "http://s3/b/clinics/1/sha256/ab?X-Amz-Credential=k&X-Amz-Signature=secret", Err: io.ErrUnexpectedEOF}))
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "X-Amz") || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("redact = %q, want no query, still wrapping the cause", err)
	}
}

func TestStallWatchdog(t *testing.T) {
	t.Parallel()
	w := New(nil, nil, Options{StallTimeout: 200 * time.Millisecond}, nil)
	var last atomic.Int64
	ctx, stop := w.watch(context.Background(), &last)
	defer stop()
	// Progress keeps it alive...
	for range 5 {
		time.Sleep(80 * time.Millisecond)
		last.Store(time.Now().UnixNano())
	}
	if ctx.Err() != nil {
		t.Fatalf("watch cancelled a transfer that made progress: %v", context.Cause(ctx))
	}
	// ...silence ends it.
	select {
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), errStalled) {
			t.Errorf("cause = %v, want errStalled", context.Cause(ctx))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled transfer was not cut")
	}
}

func TestLimiter(t *testing.T) {
	t.Parallel()
	l := newLimiter(4 << 20) // 4 MiB/s
	// Idle time up to the burst (250 ms: 1 MiB at 4 MiB/s) is made up at
	// once, not lost.
	start := time.Now()
	for range 16 {
		if err := l.wait(context.Background(), 64<<10); err != nil { // 1 MiB
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("the first 1 MiB (the burst after idling) took %s, want at once", d)
	}
	// Beyond it, the rate holds.
	start = time.Now()
	for range 32 {
		if err := l.wait(context.Background(), 64<<10); err != nil { // 2 MiB in all
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 450*time.Millisecond || d > 2*time.Second {
		t.Errorf("2 MiB at 4 MiB/s took %s, want about 0.5s", d)
	}
	// No more than the burst is ever made up: after a long idle time the
	// next 2 MiB still take 0.5 s - 0.25 s at least.
	time.Sleep(600 * time.Millisecond)
	start = time.Now()
	for range 32 {
		if err := l.wait(context.Background(), 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("2 MiB at 4 MiB/s after idling took %s, want at least 0.25s (burst capped)", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.wait(ctx, 1<<30); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestEmptyFileRoundTrip(t *testing.T) {
	t.Parallel()
	c := startCloud(t, cloudOpts{})
	w := newWorker(t, c, Options{})
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "empty")
	if err := os.WriteFile(src, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	up, err := w.EnqueueUpload(ctx, Upload{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Process(ctx, up.ID); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "out", "empty")
	down, err := w.EnqueueDownload(ctx, Download{SHA256: up.SHA256, Path: dst})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Process(ctx, down.ID); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Size() != 0 {
		t.Fatalf("downloaded empty file: %v, %v", fi, err)
	}
}

// TestRedownloadAndCheck (verify's file sweep): Check answers the cloud's
// view after asking S3; Redownload queues a finished download again when
// its file went missing from disk, and it comes back with its SHA-256.
func TestRedownloadAndCheck(t *testing.T) {
	t.Parallel()
	c := startCloud(t, cloudOpts{})
	w := newWorker(t, c, Options{})
	ctx := context.Background()
	dir := t.TempDir()
	src, sha := makeFile(t, dir, 20*1024+3)
	up, err := w.EnqueueUpload(ctx, Upload{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Process(ctx, up.ID); err != nil {
		t.Fatal(err)
	}
	if f, err := c.Client.Check(ctx, sha); err != nil || f.State != filekey.StatePresent {
		t.Fatalf("Check = %+v, %v; want present", f, err)
	}
	dst := filepath.Join(dir, "down", sha)
	down, err := w.EnqueueDownload(ctx, Download{SHA256: sha, Path: dst})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Process(ctx, down.ID); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dst); err != nil {
		t.Fatal(err)
	}
	if err := w.Redownload(ctx, sha, dst, up.Size); err != nil {
		t.Fatal(err)
	}
	if got, _ := w.Get(ctx, down.ID); got.State != StateQueued {
		t.Fatalf("after Redownload: %+v, want the same transfer queued again", got)
	}
	if err := w.Process(ctx, down.ID); err != nil {
		t.Fatal(err)
	}
	if got, n, err := HashFile(dst); err != nil || got != sha || n != up.Size {
		t.Fatalf("downloaded again: %s %d %v, want %s", got, n, err, sha)
	}
}

// TestFetchDoesNotDownloadTheClinicsOwnFile: the sweep of files records
// name (EnqueueFetch) and an import's upload of the same file may come in
// either order; the clinic never downloads back the original it holds, and
// a download the clinic needs (no upload of that file) stays queued.
func TestFetchDoesNotDownloadTheClinicsOwnFile(t *testing.T) {
	t.Parallel()
	c := startCloud(t, cloudOpts{})
	w := newWorker(t, c, Options{})
	ctx := context.Background()
	dir := t.TempDir()
	downloads := func(sha string) int {
		t.Helper()
		l, err := w.List(ctx, Filter{Direction: Down, SHA256: sha, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		return len(l)
	}

	// The sweep first, then the import's upload.
	src, sha := makeFile(t, dir, 1000)
	if err := w.EnqueueFetch(ctx, Download{SHA256: sha, Path: filepath.Join(dir, "files", sha)}); err != nil {
		t.Fatal(err)
	}
	if n := downloads(sha); n != 1 {
		t.Fatalf("downloads queued by the sweep = %d, want 1", n)
	}
	if _, err := w.EnqueueUpload(ctx, Upload{Path: src}); err != nil {
		t.Fatal(err)
	}
	if n := downloads(sha); n != 0 {
		t.Fatalf("downloads left after the upload was queued = %d, want 0", n)
	}

	// The upload first, then a sweep that read before it.
	src2, sha2 := makeFile(t, dir, 2000)
	if _, err := w.EnqueueUpload(ctx, Upload{Path: src2}); err != nil {
		t.Fatal(err)
	}
	if err := w.EnqueueFetch(ctx, Download{SHA256: sha2, Path: filepath.Join(dir, "files", sha2)}); err != nil {
		t.Fatal(err)
	}
	if n := downloads(sha2); n != 0 {
		t.Fatalf("downloads left after a late sweep = %d, want 0", n)
	}

	// A file the clinic has no upload of is fetched.
	_, sha3 := makeFile(t, dir, 3000)
	if err := w.EnqueueFetch(ctx, Download{SHA256: sha3, Path: filepath.Join(dir, "files", sha3)}); err != nil {
		t.Fatal(err)
	}
	if n := downloads(sha3); n != 1 {
		t.Fatalf("downloads of a file the clinic lacks = %d, want 1", n)
	}
}

// countingCloud counts the part-URL requests a worker makes.
type countingCloud struct {
	Cloud
	requests, urls atomic.Int64
}

func (c *countingCloud) PartURLs(ctx context.Context, sha string, parts []int) (filekey.PartURLsResponse, error) {
	c.requests.Add(1)
	c.urls.Add(int64(len(parts)))
	return c.Cloud.PartURLs(ctx, sha, parts)
}

// TestBandwidthCapUsed: with the clinic's cap at 100 Mbit/s, the upload
// uses at least 95% of it while its parts are going out (the gaps between
// parts — URL requests, commits — are made up by the limiter's burst), and
// never more than the cap; part URLs come in batches, not one request per
// part.
//
// Not parallel: beside the package's other uploads (the 1 GiB one) on a
// small machine, the sender itself could fall behind the cap, which is not
// what this measures.
func TestBandwidthCapUsed(t *testing.T) {
	c := startCloud(t, cloudOpts{})
	const capBps = 100_000_000 / 8 // 100 Mbit/s
	cc := &countingCloud{Cloud: c.Client}
	w := New(openDB(t, filepath.Join(t.TempDir(), "clinic.db")), cc, Options{BytesPerSecond: capBps, PartConcurrency: 2, RetryBase: 50 * time.Millisecond}, nil)
	ctx := context.Background()
	size := 48 * filekey.MiB // 6 parts of 8 MiB, ≈4 s at the cap
	src, _ := makeFile(t, t.TempDir(), size)
	up, err := w.EnqueueUpload(ctx, Upload{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	// Watch the live byte count: the first and the last byte sent.
	var first, last time.Time
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			w.mu.Lock()
			live := w.running[up.ID]
			w.mu.Unlock()
			if live == nil {
				continue
			}
			n := live.Load()
			if n > 0 && first.IsZero() {
				first = time.Now()
			}
			if n >= size && last.IsZero() {
				last = time.Now()
			}
		}
	}()
	err = w.Process(ctx, up.ID)
	close(stop)
	<-watched
	if err != nil {
		t.Fatal(err)
	}
	if first.IsZero() || last.IsZero() {
		t.Fatal("the live byte count never showed the upload")
	}
	// The limiter lets the first burst (250 ms of the rate) through at once.
	sending := last.Sub(first)
	ideal := time.Duration(float64(size)/capBps*float64(time.Second)) - limiterBurst
	used := float64(ideal) / float64(sending)
	t.Logf("%d MiB sent in %s at a cap of 100 Mbit/s: %.1f%% of the cap (load %s); %d part-URL requests for %d parts",
		size>>20, sending.Round(time.Millisecond), used*100, loadAvg(), cc.requests.Load(), w.PartsSent())
	if used < 0.95 {
		t.Errorf("used %.1f%% of the bandwidth cap, want ≥ 95%%", used*100)
	}
	if used > 1.05 {
		t.Errorf("sent at %.1f%% of the bandwidth cap, want ≤ 100%%", used*100)
	}
	if got := cc.requests.Load(); got != 1 {
		t.Errorf("%d part-URL requests for 6 parts, want 1 (one batch)", got)
	}
}

// loadAvg is the 1-minute load average (Linux), for the log.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
