package files

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
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/cloud-server/internal/blob"
	"github.com/scsync/scsync/cloud-server/internal/schema"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

// Two clinics and their tokens, as the test server's auth knows them.
const (
	clinicA, clinicB = ids.ID(1001), ids.ID(1002)
	tokenA, tokenB   = "token-of-clinic-a", "token-of-clinic-b"
)

// testS3 returns a client of the development MinIO and a bucket of the
// test's own, emptied and deleted when the test ends. Without MinIO the
// test fails under CI=true and skips otherwise.
func testS3(t *testing.T) (*s3.Client, string) {
	t.Helper()
	cfg := blob.Config{
		Endpoint:  testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"),
		AccessKey: testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
		SecretKey: testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"),
		Region:    "us-east-1", PathStyle: true,
		Bucket: strings.ReplaceAll(testenv.Name("scsync-test"), "_", "-"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := NewS3Client(cfg)
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &cfg.Bucket}); err != nil {
		testenv.Unavailable(t, "minio", err)
	}
	t.Cleanup(func() { dropBucket(t, c, cfg.Bucket) })
	return c, cfg.Bucket
}

func dropBucket(t *testing.T, c *s3.Client, bucket string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := blob.DropBucket(ctx, c, bucket); err != nil {
		t.Log(err)
	}
}

// env is a file service on a database and a bucket of the test's own,
// served over HTTP behind a token auth like sc-cloud's.
type env struct {
	svc    *Service
	db     *gorm.DB
	s3     *s3.Client
	bucket string
	srv    *httptest.Server
}

func newEnv(t *testing.T, mutate func(*Config)) *env {
	t.Helper()
	s3c, bucket := testS3(t)
	db, err := gorm.Open(postgres.Open(testenv.PostgresDB(t)), &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true,
		NowFunc: func() time.Time { return time.Now().UTC() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Migrate(context.Background(), sqlDB); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Bucket = bucket
	cfg.MultipartThreshold = 8 * filekey.MiB
	cfg.PartSize = 8 * filekey.MiB
	if mutate != nil {
		mutate(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := New(cfg, db, s3c, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	svc.Register(mux, func(h Handler) http.HandlerFunc { return testAuth(h, log) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{svc: svc, db: db, s3: s3c, bucket: bucket, srv: srv}
}

// testAuth is the shape of sc-cloud's clinic wrapper: the token names the
// clinic, a foreign clinic's path is a 404.
func testAuth(h Handler, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var clinic ids.ID
		switch r.Header.Get("Authorization") {
		case "Bearer " + tokenA:
			clinic = clinicA
		case "Bearer " + tokenB:
			clinic = clinicB
		default:
			httpapi.WriteError(w, log, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthorized, "no"))
			return
		}
		if r.PathValue("clinic") != clinic.String() {
			httpapi.WriteError(w, log, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such clinic"))
			return
		}
		if err := h(w, r, clinic); err != nil {
			httpapi.WriteError(w, log, err)
		}
	}
}

// call sends a JSON request to the file API as token and decodes a 2xx
// answer into out. It returns the status and, for an error, its code.
func (e *env) call(t *testing.T, method, path, token string, in, out any) (int, string) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		var apiErr httpapi.Error
		_ = json.Unmarshal(b, &apiErr)
		return resp.StatusCode, apiErr.Code
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, ""
}

// mustCall is call that fails the test on any non-2xx answer.
func (e *env) mustCall(t *testing.T, method, path, token string, in, out any) {
	t.Helper()
	if status, code := e.call(t, method, path, token, in, out); status/100 != 2 {
		t.Fatalf("%s %s = %d %s, want 2xx", method, path, status, code)
	}
}

// randomBytes returns n random bytes and their SHA-256 in hex.
func randomBytes(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, hexSHA(b)
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// s3Answer is what S3 said to a presigned request.
type s3Answer struct {
	Status int
	Code   string // S3 error code from the XML body
	ETag   string
	Body   []byte
}

// send performs a presigned request as a clinic would (only net/http):
// the signed headers, Content-Length = len(body), extra headers on top.
func send(t *testing.T, p filekey.Presigned, body []byte, extra http.Header) s3Answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(p.Method, p.URL, rd)
	if err != nil {
		t.Fatal(err)
	}
	p.Request(req.Header)
	for k, v := range extra {
		req.Header[k] = v
	}
	req.ContentLength = int64(len(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := s3Answer{Status: resp.StatusCode, ETag: resp.Header.Get("ETag"), Body: b}
	if resp.StatusCode/100 != 2 {
		if i, j := bytes.Index(b, []byte("<Code>")), bytes.Index(b, []byte("</Code>")); i >= 0 && j > i {
			a.Code = string(b[i+6 : j])
		}
	}
	return a
}

// objectExists asks S3 directly.
func (e *env) objectExists(t *testing.T, key string) bool {
	t.Helper()
	ok, err := e.svc.objectExists(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// row loads the files row.
func (e *env) row(t *testing.T, clinic ids.ID, sha string) File {
	t.Helper()
	f, err := e.svc.get(context.Background(), clinic, sha)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
