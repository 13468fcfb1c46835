package backups

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scsync/scsync/cloud-server/internal/api"
	"github.com/scsync/scsync/cloud-server/internal/blob"
	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

type seqIDs struct{ n atomic.Int64 }

func (s *seqIDs) Next() (ids.ID, error) { return ids.ID(7_000_000 + s.n.Add(1)), nil }

type env struct {
	srv    *httptest.Server
	s3     *s3.Client
	bucket string
}

// newEnv serves the backup routes behind sc-cloud's real clinic
// authorization, on a database and a bucket of the test's own.
func newEnv(t *testing.T, keep int) (*env, *store.Store) {
	t.Helper()
	ctx := context.Background()
	gen := &seqIDs{}
	st, err := store.Open(ctx, testenv.PostgresDB(t), gen)
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cfg := blob.Config{
		Endpoint:  testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"),
		AccessKey: testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
		SecretKey: testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"),
		Region:    "us-east-1", PathStyle: true,
		Bucket: strings.ReplaceAll(testenv.Name("scsync-backups"), "_", "-"),
	}
	if err := blob.New(cfg).EnsureBucket(ctx); err != nil {
		testenv.Unavailable(t, "MinIO", err)
	}
	c := files.NewS3Client(cfg)
	t.Cleanup(func() {
		out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &cfg.Bucket})
		if err == nil {
			for _, o := range out.Contents {
				_, _ = c.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &cfg.Bucket, Key: o.Key})
			}
		}
		_, _ = c.DeleteBucket(context.Background(), &s3.DeleteBucketInput{Bucket: &cfg.Bucket})
	})
	log := slog.New(slog.DiscardHandler)
	svc, err := New(Config{Bucket: cfg.Bucket, Keep: keep}, st.DB(), c, gen, log)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	apiSrv := api.New(st, nil, gen, "admin-token-for-backup-tests", func() {}, log)
	for _, rt := range svc.Routes() {
		mux.HandleFunc(rt.Pattern, apiSrv.Clinic(rt.Handler))
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{srv: srv, s3: c, bucket: cfg.Bucket}, st
}

// call sends a JSON request; a non-2xx answer must be a JSON API error,
// whose code it returns.
func (e *env) call(t *testing.T, method, path, token string, in, out any) (int, string) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, body)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		var ae httpapi.Error
		if err := json.Unmarshal(b, &ae); err != nil || ae.Code == "" || ae.Message == "" {
			t.Fatalf("%s %s = %d %s: not a JSON {code, message} error", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, ae.Code
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
	}
	return resp.StatusCode, ""
}

// send does a presigned request with body and returns S3's status.
func send(t *testing.T, p filekey.Presigned, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(p.Method, p.URL, bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	p.Request(req.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func snapshot(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// TestBackupLifecycle (M27): a clinic's snapshot goes to S3 through the
// presigned PUT, which refuses other bytes; the cloud verifies it, lists
// it, keeps only the newest ones, and gives it back; another clinic sees
// none of it; bad input gets clear errors.
func TestBackupLifecycle(t *testing.T) {
	e, st := newEnv(t, 2)
	ctx := context.Background()
	a, tokA, err := st.CreateClinic(ctx, 4101, "Backup Clinic A", store.PolicyLocalWins)
	if err != nil {
		t.Fatal(err)
	}
	b, tokB, err := st.CreateClinic(ctx, 4102, "Backup Clinic B", store.PolicyLocalWins)
	if err != nil {
		t.Fatal(err)
	}
	pa := "/v1/clinics/" + a.ID.String() + "/backups"
	pb := "/v1/clinics/" + b.ID.String() + "/backups"

	for _, bad := range []filekey.BackupBegin{{Size: 10, SHA256: "nope"}, {Size: 0, SHA256: strings.Repeat("a", 64)}, {Size: 10, SHA256: strings.Repeat("a", 64), Checkpoint: -1}} {
		if code, ec := e.call(t, "POST", pa, tokA, bad, nil); code != 400 || ec != httpapi.CodeBadRequest {
			t.Fatalf("begin %+v = %d %s, want 400 bad_request", bad, code, ec)
		}
	}
	if code, ec := e.call(t, "GET", pa+"/latest/download", tokA, nil, nil); code != 404 || ec != "no_backup" {
		t.Fatalf("latest before any = %d %s, want 404 no_backup", code, ec)
	}

	var made []filekey.Backup
	var last []byte
	for i := range 3 {
		body, sum := snapshot(t, 4096+i)
		var up filekey.BackupUpload
		if code, ec := e.call(t, "POST", pa, tokA, filekey.BackupBegin{Size: int64(len(body)), SHA256: sum, Checkpoint: int64(10 * i), Records: 5}, &up); code != 201 {
			t.Fatalf("begin: %d %s", code, ec)
		}
		complete := pa + "/" + up.Backup.ID.String() + "/complete"
		if code, ec := e.call(t, "POST", complete, tokA, nil, nil); code != 409 || ec != "not_uploaded" {
			t.Fatalf("complete before the upload = %d %s, want 409 not_uploaded", code, ec)
		}
		other, _ := snapshot(t, len(body)) // same length, other bytes
		if code, _ := send(t, up.Put, other); code/100 == 2 {
			t.Fatalf("S3 accepted bytes other than the declared snapshot (%d)", code)
		}
		if code, msg := send(t, up.Put, body); code != 200 {
			t.Fatalf("PUT snapshot: %d %s", code, msg)
		}
		var done filekey.Backup
		if code, ec := e.call(t, "POST", complete, tokA, nil, &done); code != 200 || done.State != filekey.BackupComplete {
			t.Fatalf("complete: %d %s %+v", code, ec, done)
		}
		if code, _ := e.call(t, "POST", complete, tokA, nil, &done); code != 200 {
			t.Fatalf("a retried complete = %d, want 200", code)
		}
		made = append(made, done)
		last = body
	}

	// Only the newest two are kept; the oldest is pruned, its object gone.
	var list filekey.BackupList
	e.call(t, "GET", pa, tokA, nil, &list)
	if len(list.Items) != 2 || list.Items[0].ID != made[2].ID || list.Items[1].ID != made[1].ID {
		t.Fatalf("listed %+v, want the newest two", list.Items)
	}
	key := filekey.BackupKey(a.ID, made[0].ID)
	if _, err := e.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &e.bucket, Key: &key}); err == nil {
		t.Fatal("the pruned backup's object is still in S3")
	}
	if code, _ := e.call(t, "GET", pa+"/"+made[0].ID.String()+"/download", tokA, nil, nil); code != 409 {
		t.Fatalf("download of a pruned backup = %d, want 409", code)
	}

	// The newest comes back byte for byte.
	var dl filekey.BackupDownload
	if code, ec := e.call(t, "GET", pa+"/latest/download", tokA, nil, &dl); code != 200 || dl.Backup.ID != made[2].ID || dl.Backup.Checkpoint != 20 {
		t.Fatalf("latest: %d %s %+v", code, ec, dl.Backup)
	}
	if code, got := send(t, dl.Get, nil); code != 200 || !bytes.Equal(got, last) {
		t.Fatalf("download: %d, %d bytes, want the snapshot", code, len(got))
	}

	// Clinic B sees nothing of A's, and cannot use A's path.
	if code, ec := e.call(t, "GET", pb+"/latest/download", tokB, nil, nil); code != 404 || ec != "no_backup" {
		t.Fatalf("clinic B's latest = %d %s, want 404 no_backup", code, ec)
	}
	if code, _ := e.call(t, "GET", pa+"/latest/download", tokB, nil, nil); code/100 == 2 {
		t.Fatal("clinic B's token read clinic A's backup")
	}
	if code, _ := e.call(t, "GET", pb+"/"+made[2].ID.String()+"/download", tokB, nil, nil); code != 404 {
		t.Fatalf("clinic B asking for A's backup id = %d, want 404", code)
	}

	// The S3 probe: a signed GET of an object that does not exist.
	var probe filekey.S3Probe
	if code, _ := e.call(t, "GET", "/v1/clinics/"+a.ID.String()+"/s3-probe", tokA, nil, &probe); code != 200 {
		t.Fatalf("probe: %d", code)
	}
	if code, body := send(t, probe.Get, nil); code != 404 || !strings.Contains(string(body), "NoSuchKey") {
		t.Fatalf("probe GET = %d %s, want 404 NoSuchKey", code, body)
	}
}
