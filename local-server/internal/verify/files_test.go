package verify

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/scsync/scsync/local-server/internal/filesdtest"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	filesdtest.Remove()
	os.Exit(code)
}

// TestClinicCopy: the clinic holds a file when a finished transfer's path
// exists with the record's size; a transfer under way makes it "on its
// way"; a missing or truncated file is no copy.
func TestClinicCopy(t *testing.T) {
	dir := t.TempDir()
	good, short := filepath.Join(dir, "good"), filepath.Join(dir, "short")
	if err := os.WriteFile(good, make([]byte, 10), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, make([]byte, 3), 0o600); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(dir, "gone")
	for _, c := range []struct {
		name     string
		ts       []transfer.Transfer
		want     string
		wantBusy bool
	}{
		{"present", []transfer.Transfer{{State: transfer.StatePresent, Path: good}}, good, false},
		{"gone", []transfer.Transfer{{State: transfer.StatePresent, Path: gone}}, "", false},
		{"truncated", []transfer.Transfer{{State: transfer.StatePresent, Path: short}}, "", false},
		{"gone source, downloaded copy", []transfer.Transfer{{State: transfer.StatePresent, Path: gone}, {State: transfer.StatePresent, Path: good}}, good, false},
		{"failed only", []transfer.Transfer{{State: transfer.StateFailed, Path: good}}, "", false},
		{"under way", []transfer.Transfer{{State: transfer.StateQueued, Path: gone}}, "", true},
	} {
		got, busy := clinicCopy(c.ts, 10)
		if got != c.want || busy != c.wantBusy {
			t.Errorf("%s: clinicCopy = %q, %v; want %q, %v", c.name, got, busy, c.want, c.wantBusy)
		}
	}
}

// TestNoBatchRoute: the answers of a cloud that predates POST …/files/check
// (405 from its mux, a 404 not_found or a 404 that is not JSON from a router
// in front) send the sweep to per-file checks; any other failure fails it.
func TestNoBatchRoute(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&transfer.CloudError{Status: http.StatusMethodNotAllowed, Code: "http_405"}, true},
		{fmt.Errorf("wrapped: %w", &transfer.CloudError{Status: http.StatusMethodNotAllowed, Code: "http_405"}), true},
		{&transfer.CloudError{Status: http.StatusNotFound, Code: "http_404"}, true},
		{&transfer.CloudError{Status: http.StatusNotFound, Code: httpapi.CodeNotFound}, true},
		{&transfer.CloudError{Status: http.StatusNotFound, Code: "file_deleted"}, false},
		{&transfer.CloudError{Status: http.StatusBadRequest, Code: filekey.CodeTooManyFiles}, false},
		{&transfer.CloudError{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable}, false},
		{errors.New("dial tcp: connection refused"), false},
	} {
		if got := noBatchRoute(c.err); got != c.want {
			t.Errorf("noBatchRoute(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// sweepCloud is a filesd (clinic testClinic, and otherClinic) behind a
// proxy that counts the sweep's requests; as an older cloud it serves only
// the single check's route, through a mux of its own, so POST …/files/check
// gets the mux's own answer (405); broken, it answers 503 to the batch.
type sweepCloud struct {
	*filesdtest.Server
	URL          string
	otherToken   string
	old, broken  atomic.Bool
	batches      atomic.Int32
	singleChecks atomic.Int32
}

const (
	testClinic  = ids.ID(4242)
	otherClinic = ids.ID(4343)
)

func startSweepCloud(t *testing.T) *sweepCloud {
	t.Helper()
	c := &sweepCloud{otherToken: "other-clinic-" + testenv.Name("t")}
	c.Server = filesdtest.Start(t, testClinic, filesdtest.Options{Clinics: map[ids.ID]string{otherClinic: c.otherToken}})
	target, err := url.Parse(c.Server.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	old := http.NewServeMux()
	old.Handle("GET "+filekey.PathFile, proxy)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/files/check"):
			c.batches.Add(1)
		case r.Method == http.MethodGet && r.URL.Query().Get("check") == "true":
			c.singleChecks.Add(1)
		}
		switch {
		case c.broken.Load() && r.Method == http.MethodPost:
			httpapi.WriteError(w, nil, httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "down"))
		case c.old.Load():
			old.ServeHTTP(w, r)
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

// TestSweepFilesInBatches (verify's file sweep): the sweep asks the cloud
// about the files it must ask about in batches (4 here: 9 files asked, 3
// requests, no per-file check) and finds what it found file by file: a file
// the clinic lost (also one the cloud need not hold), one the cloud does not
// know (another clinic's upload of the same bytes does not count), one the
// cloud holds as failed, one missing on both sides; a file the cloud need
// not hold that the clinic has is not asked about, one with no transfer is
// on its way. Against a cloud without the batch route (405) it finds the
// same with one check per file after one refused batch; a batch that fails
// (503) fails the sweep.
func TestSweepFilesInBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := startSweepCloud(t)
	dir := t.TempDir()
	gen, err := ids.NewGenerator(5, ids.GeneratorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "local.db"), testClinic, gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	client := transfer.NewClient(c.URL, c.Token, testClinic, nil)
	queue := transfer.New(st.DB(), client, transfer.Options{}, nil)
	other := transfer.New(st.DB(), transfer.NewClient(c.Server.URL, c.otherToken, otherClinic, nil), transfer.Options{}, nil)

	var files []store.FileOfRecords
	paths := map[string]string{}
	add := func(name string, wanted bool, up *transfer.Worker) {
		t.Helper()
		b := make([]byte, 1000+len(files))
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		sha := hex.EncodeToString(sum[:])
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if up != nil {
			tr, err := up.EnqueueUpload(ctx, transfer.Upload{Path: p, SHA256: sha, Size: int64(len(b))})
			if err != nil {
				t.Fatal(err)
			}
			if err := up.Process(ctx, tr.ID); err != nil {
				t.Fatalf("upload of %s: %v", name, err)
			}
		}
		files = append(files, store.FileOfRecords{SHA256: sha, Size: int64(len(b)), Wanted: wanted})
		paths[sha] = p
	}
	names := map[string]string{} // sha → name
	for _, f := range []struct {
		name   string
		wanted bool
		up     *transfer.Worker
	}{
		{"ok1", true, queue}, {"ok2", true, queue}, {"lost", true, queue}, {"ok3", true, queue},
		{"lost-not-wanted", false, queue}, {"unknown", true, other}, {"held-not-wanted", false, other},
		{"failed", true, other}, {"ok4", true, queue}, {"nowhere", true, other}, {"no-transfer", true, nil},
	} {
		add(f.name, f.wanted, f.up)
		names[files[len(files)-1].SHA256] = f.name
	}
	byName := map[string]store.FileOfRecords{}
	for _, f := range files {
		byName[names[f.SHA256]] = f
	}
	for _, n := range []string{"lost", "lost-not-wanted", "nowhere"} {
		if err := os.Remove(paths[byName[n].SHA256]); err != nil {
			t.Fatal(err)
		}
	}
	// The cloud holds "failed" of this clinic as failed: an upload begun and aborted.
	f := byName["failed"]
	if _, err := client.BeginUpload(ctx, f.SHA256, f.Size, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Abort(ctx, f.SHA256); err != nil {
		t.Fatal(err)
	}

	want := []string{
		"lost clinic/missing from the clinic's disk/download/",
		"lost-not-wanted clinic/missing from the clinic's disk/download/",
		"unknown cloud/missing from S3/upload/",
		"failed cloud/state failed: aborted by the clinic/upload/",
		"nowhere cloud/missing from S3//no copy on the clinic's disk either",
		"nowhere clinic/missing from the clinic's disk//the cloud has no verified copy",
	}
	v := &Verifier{log: slog.New(slog.DiscardHandler)}
	v.WithFiles(client, queue, filepath.Join(dir, "files"))
	v.fbatch = 4
	sweep := func() (Report, error) {
		c.batches.Store(0)
		c.singleChecks.Store(0)
		var rep Report
		err := v.sweepFileList(ctx, &rep, files, false)
		return rep, err
	}
	check := func(how string, batches, singles int32) {
		t.Helper()
		rep, err := sweep()
		if err != nil {
			t.Fatalf("%s: sweep: %v", how, err)
		}
		var got []string
		for _, d := range rep.Differences {
			got = append(got, names[d.SHA256]+" "+d.Side+"/"+d.What+"/"+d.Repair+"/"+d.Error)
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: sweep found\n%s\nwant\n%s", how, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if rep.Files != len(files) || rep.InFlight != 1 {
			t.Errorf("%s: sweep counted %d files, %d on their way; want %d, 1", how, rep.Files, rep.InFlight, len(files))
		}
		if b, s := c.batches.Load(), c.singleChecks.Load(); b != batches || s != singles {
			t.Errorf("%s: sweep sent %d batches and %d single checks, want %d and %d", how, b, s, batches, singles)
		}
	}
	check("batched", 3, 0)
	c.old.Store(true)
	check("older cloud", 1, 9)
	c.old.Store(false)
	c.broken.Store(true)
	if _, err := sweep(); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("sweep with the batch answering 503 = %v, want the error", err)
	}
	if s := c.singleChecks.Load(); s != 0 {
		t.Errorf("a failed batch was followed by %d single checks, want none", s)
	}
}
