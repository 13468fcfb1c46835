package retention

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/scsync/scsync/cloud-server/internal/blob"
	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// seqIDs mints ids for tests.
type seqIDs struct{ n atomic.Int64 }

func (s *seqIDs) Next() (ids.ID, error) { return ids.ID(5_000_000 + s.n.Add(1)), nil }

// env is a store on a database of the test's own, a file service on a hot
// and a cold bucket of its own, and the retention service over both.
type env struct {
	st        *store.Store
	fs        *files.Service
	svc       *Service
	s3        *s3.Client
	hot, cold string
	gen       *seqIDs
	log       *slog.Logger
}

func s3Config() blob.Config {
	return blob.Config{
		Endpoint:  testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"),
		AccessKey: testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
		SecretKey: testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"),
		Region:    "us-east-1", PathStyle: true,
	}
}

// bucket creates a bucket of the test's own, emptied and deleted at the
// end. Without MinIO the test fails under CI=true.
func bucket(t *testing.T, c *s3.Client) string {
	t.Helper()
	name := strings.ReplaceAll(testenv.Name("scsync-ret"), "_", "-")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		testenv.Unavailable(t, "minio", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := blob.DropBucket(ctx, c, name); err != nil {
			t.Log(err)
		}
	})
	return name
}

// newEnv builds an env; withCold configures the cold bucket.
func newEnv(t *testing.T, withCold bool) *env {
	t.Helper()
	s3c := files.NewS3Client(s3Config())
	e := &env{s3: s3c, hot: bucket(t, s3c), gen: &seqIDs{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if withCold {
		e.cold = bucket(t, s3c)
	}
	st, err := store.Open(context.Background(), testenv.PostgresDB(t), e.gen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e.st = st
	e.fs = e.fileService(t, nil)
	e.svc, err = New(DefaultConfig(), st, e.fs, e.gen, nil, nil, e.log)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// fileService is another file service (another node) on the env's
// database and buckets.
func (e *env) fileService(t *testing.T, mutate func(*files.Config)) *files.Service {
	t.Helper()
	cfg := files.DefaultConfig()
	cfg.Bucket, cfg.ColdBucket = e.hot, e.cold
	if mutate != nil {
		mutate(&cfg)
	}
	fs, err := files.New(cfg, e.st.DB(), e.s3, nil, e.log)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// clinic enrolls a clinic and returns its id and token.
func (e *env) clinic(t *testing.T) (ids.ID, string) {
	t.Helper()
	id, _ := e.gen.Next()
	c, tok, err := e.st.CreateClinic(context.Background(), id, fmt.Sprintf("clinic %d", id), "")
	if err != nil {
		t.Fatal(err)
	}
	return c.ID, tok
}

// upload stores data as clinic's file the way the clinic would end up:
// the object under its key in the hot bucket, verified and present.
func (e *env) upload(t *testing.T, clinic ids.ID, data []byte) string {
	t.Helper()
	sha := hexSHA(data)
	ctx := context.Background()
	if _, err := e.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &e.hot, Key: aws.String(filekey.Key(clinic, sha)),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}); err != nil {
		t.Fatal(err)
	}
	begin, err := e.fs.BeginUpload(ctx, clinic, sha, int64(len(data)), "image/png")
	if err != nil || !begin.Present {
		t.Fatalf("BeginUpload(stored object) = %+v, %v; want present", begin, err)
	}
	return sha
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// up applies one change of the clinic, as its queue would deliver it.
func (e *env) up(t *testing.T, clinic, record ids.ID, base, next version.V, c records.Content) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	changeID, _ := e.gen.Next()
	env := wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: clinic, Origin: wire.OriginLocal,
		ChangeID: changeID, Kind: c.Kind(), RecordID: record, BaseVersion: base, NewVersion: next, At: time.Now(), Payload: b}
	res, err := e.st.ApplyUp(context.Background(), clinic, []wire.Envelope{env})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("ApplyUp(%s %s) = %+v, %v; want accepted", c.Kind(), record, res, err)
	}
}

// create makes a record of the clinic (version 1.0) and returns its id.
func (e *env) create(t *testing.T, clinic ids.ID, c records.Content) ids.ID {
	t.Helper()
	id, _ := e.gen.Next()
	e.up(t, clinic, id, version.V{}, version.First, c)
	return id
}

// study makes a patient and a study of it dated date.
func (e *env) study(t *testing.T, clinic ids.ID, date string) ids.ID {
	t.Helper()
	p := e.create(t, clinic, records.Patient{Name: "P"})
	return e.create(t, clinic, records.Study{PatientID: p, StudyDate: date})
}

func (e *env) image(t *testing.T, clinic, study ids.ID, date, sha string) ids.ID {
	t.Helper()
	return e.create(t, clinic, records.Image{StudyID: study, Modality: "PANO", StudyDate: date, SHA256: sha, Size: 1})
}

// resync sends the clinic's content again over the cloud's current
// version (what sc-local does when a record is synced again).
func (e *env) resync(t *testing.T, clinic ids.ID, kind wire.Kind, id ids.ID, c records.Content) {
	t.Helper()
	m := e.meta(t, clinic, kind, id)
	e.up(t, clinic, id, m.Version, m.Version.NextSession(), c)
}

// unsync takes the record out of the cloud from the cloud API.
func (e *env) unsync(t *testing.T, clinic ids.ID, kind wire.Kind, id ids.ID) {
	t.Helper()
	changeID, _ := e.gen.Next()
	if _, err := e.st.Save(context.Background(), clinic, store.Edit{Kind: kind, ID: id, Delete: true, Unsync: true, ChangeID: changeID}); err != nil {
		t.Fatalf("unsync %s %s: %v", kind, id, err)
	}
}

func (e *env) meta(t *testing.T, clinic ids.ID, kind wire.Kind, id ids.ID) store.Meta {
	t.Helper()
	r, err := e.st.Get(context.Background(), clinic, kind, id)
	if err != nil {
		t.Fatalf("Get(%s %s) = %v", kind, id, err)
	}
	return store.RecordMeta(r)
}

// exists asks S3 whether bucket holds clinic's file sha.
func (e *env) exists(t *testing.T, bucket string, clinic ids.ID, sha string) bool {
	t.Helper()
	_, err := e.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(filekey.Key(clinic, sha))})
	if err == nil {
		return true
	}
	var nf *s3types.NotFound
	var ae interface{ ErrorCode() string }
	if errors.As(err, &nf) || (errors.As(err, &ae) && (ae.ErrorCode() == "NotFound" || ae.ErrorCode() == "NoSuchKey")) {
		return false
	}
	t.Fatalf("HeadObject(%s, %s) = %v", bucket, sha, err)
	return false
}

// download fetches clinic's file through a presigned GET and returns the
// bytes' SHA-256, or the service's refusal.
func (e *env) download(t *testing.T, fs *files.Service, clinic ids.ID, sha string) (string, error) {
	t.Helper()
	dl, err := fs.DownloadURL(context.Background(), clinic, sha)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(context.Background(), dl.Get.Method, dl.Get.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	dl.Get.Request(req.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", sha, resp.StatusCode)
	}
	return hexSHA(b), nil
}

// changes returns the clinic's change log.
func (e *env) changes(t *testing.T, clinic ids.ID) []wire.Envelope {
	t.Helper()
	page, err := e.st.ChangesSince(context.Background(), clinic, 0, 5000)
	if err != nil {
		t.Fatal(err)
	}
	return page.Changes
}

func (e *env) stat(t *testing.T, clinic ids.ID, sha string) filekey.File {
	t.Helper()
	f, err := e.fs.Stat(context.Background(), clinic, sha)
	if err != nil {
		t.Fatalf("Stat(%s) = %v", sha, err)
	}
	return f
}
