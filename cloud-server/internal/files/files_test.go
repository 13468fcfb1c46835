package files

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

func path(pattern string, clinic ids.ID, sha string) string {
	return filekey.Path(pattern, clinic, sha)
}

func TestSinglePutRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	data, sha := randomBytes(t, 300*1024)

	var begin filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(len(data)), ContentType: "image/png"}, &begin)
	if begin.Present || begin.Mode != filekey.ModeSingle || begin.Put == nil {
		t.Fatalf("begin = %+v, want a single PUT", begin)
	}
	if !strings.Contains(begin.Put.URL, "/"+filekey.Key(clinicA, sha)+"?") {
		t.Errorf("PUT URL %s does not name key %s", begin.Put.URL, filekey.Key(clinicA, sha))
	}
	if a := send(t, *begin.Put, data, nil); a.Status != http.StatusOK {
		t.Fatalf("PUT = %d %s", a.Status, a.Code)
	}
	var f filekey.File
	e.mustCall(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, &f)
	if f.State != filekey.StatePresent || f.VerifiedAt == nil || f.Size != int64(len(data)) {
		t.Fatalf("complete = %+v, want present", f)
	}
	if got := e.svc.Relayed().VerifyRead; got != 0 {
		t.Errorf("VerifyRead = %d, want 0: a single PUT is verified with S3's own SHA-256", got)
	}

	// Same file again: a no-op, nothing to send; complete again too.
	var again filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(len(data))}, &again)
	if !again.Present || again.Put != nil || again.Mode != "" {
		t.Fatalf("re-begin = %+v, want present with nothing to send", again)
	}
	e.mustCall(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, &f)

	var dl filekey.DownloadResponse
	e.mustCall(t, "GET", path(filekey.PathDownload, clinicA, sha), tokenA, nil, &dl)
	a := send(t, dl.Get, nil, nil)
	if a.Status != http.StatusOK || hexSHA(a.Body) != sha || dl.Size != int64(len(data)) || dl.ContentType != "image/png" {
		t.Fatalf("GET = %d, %d bytes sha %s; want 200 with the file", a.Status, len(a.Body), hexSHA(a.Body))
	}
	// Range resume.
	a = send(t, dl.Get, nil, http.Header{"Range": {"bytes=1000-"}})
	if a.Status != http.StatusPartialContent || hexSHA(append(append([]byte{}, data[:1000]...), a.Body...)) != sha {
		t.Fatalf("ranged GET = %d %d bytes, want 206 with the rest", a.Status, len(a.Body))
	}
	r := e.svc.Relayed()
	t.Logf("relayed: %+v for %d file bytes up and %d down", r, len(data), 2*len(data))
	if r.RequestBytes+r.ResponseBytes > 16*1024 {
		t.Errorf("Relayed = %+v, want only JSON (< 16 KiB) for a %d byte file", r, len(data))
	}
}

func TestSinglePutRefusesOtherBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	data, sha := randomBytes(t, 64*1024)
	var begin filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(len(data))}, &begin)
	other, _ := randomBytes(t, len(data))
	noChecksum := *begin.Put
	noChecksum.Header = map[string]string{}
	for k, v := range begin.Put.Header {
		if !strings.EqualFold(k, "x-amz-checksum-sha256") {
			noChecksum.Header[k] = v
		}
	}
	tests := []struct {
		name       string
		p          filekey.Presigned
		body       []byte
		wantStatus int
	}{
		{"same length, other bytes", *begin.Put, other, http.StatusBadRequest}, // XAmzContentChecksumMismatch
		{"shorter", *begin.Put, data[:len(data)-1], http.StatusForbidden},      // signed Content-Length
		{"longer", *begin.Put, append(append([]byte{}, data...), 0), http.StatusForbidden},
		{"checksum header left out", noChecksum, data, http.StatusBadRequest}, // unsigned headers present/missing
	}
	for _, tt := range tests {
		a := send(t, tt.p, tt.body, nil)
		if a.Status != tt.wantStatus {
			t.Errorf("%s: PUT = %d %s, want %d", tt.name, a.Status, a.Code, tt.wantStatus)
		}
		t.Logf("%s: %d %s", tt.name, a.Status, a.Code)
	}
	if e.objectExists(t, filekey.Key(clinicA, sha)) {
		t.Fatal("an object was stored from a refused PUT")
	}
	if status, code := e.call(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, nil); status != http.StatusConflict || code != filekey.CodeNotUploaded {
		t.Errorf("complete before PUT = %d %s, want 409 %s", status, code, filekey.CodeNotUploaded)
	}
	if status, code := e.call(t, "GET", path(filekey.PathDownload, clinicA, sha), tokenA, nil, nil); status != http.StatusConflict || code != filekey.CodeNotPresent {
		t.Errorf("download of an uploading file = %d %s, want 409 %s", status, code, filekey.CodeNotPresent)
	}
}

// uploadParts sends the given parts of data for an open multipart upload.
func (e *env) uploadParts(t *testing.T, clinic ids.ID, token, sha string, data []byte, parts ...int) {
	t.Helper()
	var urls filekey.PartURLsResponse
	e.mustCall(t, "POST", path(filekey.PathPartURLs, clinic, sha), token, filekey.PartURLsRequest{Parts: parts}, &urls)
	for _, p := range urls.Parts {
		off := int64(p.Number-1) * 8 * filekey.MiB
		if a := send(t, p.Put, data[off:off+p.Size], nil); a.Status != http.StatusOK {
			t.Fatalf("PUT part %d = %d %s", p.Number, a.Status, a.Code)
		}
	}
}

func TestMultipartRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	data, sha := randomBytes(t, int(20*filekey.MiB+123)) // 8 + 8 + 4 MiB+123
	size := int64(len(data))

	var begin filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: size}, &begin)
	if begin.Mode != filekey.ModeMultipart || begin.PartCount != 3 || begin.PartSize != 8*filekey.MiB || begin.UploadID == "" {
		t.Fatalf("begin = %+v, want 3 parts of 8 MiB", begin)
	}
	// Begin again (a restarted client): the same upload, so parts survive.
	var again filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: size}, &again)
	if again.UploadID != begin.UploadID {
		t.Fatalf("re-begin upload id %q, want the open one %q", again.UploadID, begin.UploadID)
	}

	e.uploadParts(t, clinicA, tokenA, sha, data, 1, 3)
	var parts filekey.PartsResponse
	e.mustCall(t, "GET", path(filekey.PathParts, clinicA, sha), tokenA, nil, &parts)
	if len(parts.Parts) != 2 || parts.Parts[0].Number != 1 || parts.Parts[1].Number != 3 ||
		parts.Parts[1].Size != 4*filekey.MiB+123 || parts.Parts[0].ETag == "" || parts.PartCount != 3 {
		t.Fatalf("parts = %+v, want 1 and 3", parts)
	}
	if status, code := e.call(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, nil); status != http.StatusConflict || code != filekey.CodePartsMissing {
		t.Fatalf("complete with part 2 missing = %d %s, want 409 %s", status, code, filekey.CodePartsMissing)
	}
	// A part URL pins its length: part 2 with 1 byte too few is refused.
	var urls filekey.PartURLsResponse
	e.mustCall(t, "POST", path(filekey.PathPartURLs, clinicA, sha), tokenA, filekey.PartURLsRequest{Parts: []int{2}}, &urls)
	if a := send(t, urls.Parts[0].Put, data[8*filekey.MiB:16*filekey.MiB-1], nil); a.Status != http.StatusForbidden {
		t.Fatalf("short part PUT = %d %s, want 403", a.Status, a.Code)
	}
	e.uploadParts(t, clinicA, tokenA, sha, data, 2)

	var f filekey.File
	e.mustCall(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, &f)
	if f.State != filekey.StatePresent {
		t.Fatalf("complete = %+v, want present", f)
	}
	if got := e.svc.Relayed().VerifyRead; got != size {
		t.Errorf("VerifyRead = %d, want %d (multipart is hashed once in the cloud)", got, size)
	}
	if row := e.row(t, clinicA, sha); row.UploadID != "" || row.VerifiedAt == nil {
		t.Errorf("row after complete = %+v, want no upload id and verified", row)
	}
	var dl filekey.DownloadResponse
	e.mustCall(t, "GET", path(filekey.PathDownload, clinicA, sha), tokenA, nil, &dl)
	if a := send(t, dl.Get, nil, nil); a.Status != http.StatusOK || hexSHA(a.Body) != sha {
		t.Fatalf("GET = %d, sha %s, want the file", a.Status, hexSHA(a.Body))
	}
	r := e.svc.Relayed()
	if r.RequestBytes+r.ResponseBytes > 32*1024 {
		t.Errorf("Relayed = %+v, want only JSON for a %d byte file", r, size)
	}
}

func TestMultipartWrongContentRejected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, sha := randomBytes(t, int(9*filekey.MiB))
	other, _ := randomBytes(t, int(9*filekey.MiB)) // same size, other bytes
	var begin filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(len(other))}, &begin)
	e.uploadParts(t, clinicA, tokenA, sha, other, 1, 2)
	if status, code := e.call(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, nil); status != http.StatusUnprocessableEntity || code != filekey.CodeVerifyFailed {
		t.Fatalf("complete of wrong content = %d %s, want 422 %s", status, code, filekey.CodeVerifyFailed)
	}
	if e.objectExists(t, filekey.Key(clinicA, sha)) {
		t.Error("the rejected object is still stored")
	}
	var f filekey.File
	e.mustCall(t, "GET", path(filekey.PathFile, clinicA, sha), tokenA, nil, &f)
	if f.State != filekey.StateFailed || f.Reason == "" {
		t.Errorf("file after rejection = %+v, want failed with a reason", f)
	}
	// Beginning again opens a new upload.
	var again filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(len(other))}, &again)
	if again.State != filekey.StateUploading || again.UploadID == "" || again.UploadID == begin.UploadID {
		t.Errorf("begin after rejection = %+v, want a new upload", again)
	}
}

// TestVerifyReusesBuffersInOrder verifies objects of more ranges than the
// verify holds buffers, so every buffer is reused: the right bytes are
// present, and bytes that differ only in the last range are rejected.
func TestVerifyReusesBuffersInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	n := 2*(verifyReaders+1)*verifyChunk + 12345 // 11 ranges, 5 buffers
	data, sha := randomBytes(t, n)
	all := make([]int, filekey.PartCount(int64(n), 8*filekey.MiB))
	for i := range all {
		all[i] = i + 1
	}
	var begin filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(n)}, &begin)
	e.uploadParts(t, clinicA, tokenA, sha, data, all...)
	var f filekey.File
	e.mustCall(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, &f)
	if f.State != filekey.StatePresent {
		t.Fatalf("complete = %+v, want present", f)
	}

	// Other bytes under a SHA-256 that differ from them only in the last
	// range, hashed after every buffer was reused.
	want, otherSHA := randomBytes(t, n)
	wrong := bytes.Clone(want)
	wrong[n-1] ^= 0xff
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, otherSHA), tokenA, filekey.BeginRequest{Size: int64(n)}, &begin)
	e.uploadParts(t, clinicA, tokenA, otherSHA, wrong, all...)
	if status, code := e.call(t, "POST", path(filekey.PathComplete, clinicA, otherSHA), tokenA, nil, nil); status != http.StatusUnprocessableEntity || code != filekey.CodeVerifyFailed {
		t.Fatalf("complete of wrong content = %d %s, want 422 %s", status, code, filekey.CodeVerifyFailed)
	}
}

func TestBeginAfterCrashBeforeComplete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	data, sha := randomBytes(t, 1000)
	var begin filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: 1000}, &begin)
	if a := send(t, *begin.Put, data, nil); a.Status != http.StatusOK {
		t.Fatalf("PUT = %d", a.Status)
	}
	// The clinic dies before complete; on restart it begins again.
	var again filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: 1000}, &again)
	if !again.Present {
		t.Fatalf("begin after an unconfirmed PUT = %+v, want present (verified, nothing to resend)", again)
	}
}

func TestConcurrentBeginOneUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, sha := randomBytes(t, 64)
	size := 100 * filekey.MiB
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() {
			r, err := e.svc.BeginUpload(context.Background(), clinicA, sha, size, "")
			if err != nil {
				t.Errorf("BeginUpload: %v", err)
			}
			got[i] = r.UploadID
		})
	}
	wg.Wait()
	for _, id := range got {
		if id != got[0] || id == "" {
			t.Fatalf("concurrent begins got upload ids %q, want one", got)
		}
	}
	out, err := e.s3.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: &e.bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 1 {
		t.Errorf("S3 holds %d multipart uploads, want 1 (losers abort theirs)", len(out.Uploads))
	}
}

func TestResumeAfterUploadGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	data, sha := randomBytes(t, int(10*filekey.MiB))
	var begin filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(len(data))}, &begin)
	e.uploadParts(t, clinicA, tokenA, sha, data, 1)
	// Someone (MinIO's own stale-upload expiry, an operator) aborts it.
	if _, err := e.s3.AbortMultipartUpload(context.Background(), &s3.AbortMultipartUploadInput{Bucket: &e.bucket,
		Key: aws.String(filekey.Key(clinicA, sha)), UploadId: &begin.UploadID}); err != nil {
		t.Fatal(err)
	}
	if status, code := e.call(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, nil); status != http.StatusConflict || code != filekey.CodeUploadGone {
		t.Fatalf("complete of an aborted upload = %d %s, want 409 %s", status, code, filekey.CodeUploadGone)
	}
	var again filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(len(data))}, &again)
	if again.UploadID == "" || again.UploadID == begin.UploadID {
		t.Fatalf("begin after abort = %+v, want a new upload", again)
	}
	e.uploadParts(t, clinicA, tokenA, sha, data, 1, 2)
	e.mustCall(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, nil)
}

// TestClinicIsolation: a clinic cannot name another clinic's key through the
// API (keys are derived from the authenticated clinic), nor reach it by
// editing a presigned URL.
func TestClinicIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	data, sha := randomBytes(t, 5000)
	ctx := context.Background()
	// A uploads a file.
	begin, err := e.svc.BeginUpload(ctx, clinicA, sha, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	if a := send(t, *begin.Put, data, nil); a.Status != http.StatusOK {
		t.Fatalf("PUT = %d", a.Status)
	}
	if _, err := e.svc.Complete(ctx, clinicA, sha); err != nil {
		t.Fatal(err)
	}

	// B knows the SHA-256 but has no such file: download is not found, and
	// beginning an upload gives B a URL for B's own key only.
	if _, err := e.svc.DownloadURL(ctx, clinicB, sha); !errors.Is(err, ErrNotFound) {
		t.Errorf("DownloadURL(B, A's sha) = %v, want ErrNotFound", err)
	}
	bBegin, err := e.svc.BeginUpload(ctx, clinicB, sha, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	if bBegin.Present || !strings.Contains(bBegin.Put.URL, "/clinics/"+clinicB.String()+"/sha256/"+sha+"?") ||
		strings.Contains(bBegin.Put.URL, "/clinics/"+clinicA.String()+"/") {
		t.Errorf("B's begin for A's sha = present %v URL %s, want an upload to B's key", bBegin.Present, bBegin.Put.URL)
	}
	// Over HTTP, B's token on A's path is refused by the auth wrapper, and
	// every sha256 path segment is validated (no "../" games).
	if status, _ := e.call(t, "GET", path(filekey.PathDownload, clinicA, sha), tokenB, nil, nil); status != http.StatusNotFound {
		t.Errorf("B's token on A's download = %d, want 404", status)
	}
	if status, code := e.call(t, "GET", "/v1/clinics/"+clinicB.String()+"/files/..%2F..%2F"+clinicA.String()+"%2Fsha256%2F"+sha+"/download", tokenB, nil, nil); status != http.StatusBadRequest || code != filekey.CodeInvalidSHA256 {
		t.Errorf("B's download with a crafted sha256 = %d %s, want 400 %s", status, code, filekey.CodeInvalidSHA256)
	}

	// B holds a presigned URL of its own and edits the path to A's key.
	dlA, err := e.svc.DownloadURL(ctx, clinicA, sha)
	if err != nil {
		t.Fatal(err)
	}
	edited := func(p filekey.Presigned, from, to ids.ID) filekey.Presigned {
		p.URL = strings.Replace(p.URL, "/clinics/"+from.String()+"/", "/clinics/"+to.String()+"/", 1)
		return p
	}
	// B's PUT URL pointed at A's key: S3 checks the signature over the path.
	if a := send(t, edited(*bBegin.Put, clinicB, clinicA), data, nil); a.Status != http.StatusForbidden || a.Code != "SignatureDoesNotMatch" {
		t.Errorf("B's PUT URL edited to A's key = %d %s, want 403 SignatureDoesNotMatch", a.Status, a.Code)
	}
	// A's GET URL edited to B's key (and the other way round).
	if a := send(t, edited(dlA.Get, clinicA, clinicB), nil, nil); a.Status != http.StatusForbidden {
		t.Errorf("A's GET URL edited to B's key = %d %s, want 403", a.Status, a.Code)
	}
	if a := send(t, dlA.Get, nil, nil); a.Status != http.StatusOK {
		t.Errorf("A's own GET URL = %d %s, want 200", a.Status, a.Code)
	}
}

func TestTamperedURLsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	data, sha := randomBytes(t, 2000)
	ctx := context.Background()
	begin, err := e.svc.BeginUpload(ctx, clinicA, sha, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	if a := send(t, *begin.Put, data, nil); a.Status != http.StatusOK {
		t.Fatalf("PUT = %d", a.Status)
	}
	if _, err := e.svc.Complete(ctx, clinicA, sha); err != nil {
		t.Fatal(err)
	}
	dl, err := e.svc.DownloadURL(ctx, clinicA, sha)
	if err != nil {
		t.Fatal(err)
	}
	flipSig := func(u string) string {
		i := strings.Index(u, "X-Amz-Signature=") + len("X-Amz-Signature=")
		c := byte('0')
		if u[i] == '0' {
			c = '1'
		}
		return u[:i] + string(c) + u[i+1:]
	}
	tests := []struct {
		name   string
		url    string
		status int
	}{
		{"signature changed", flipSig(dl.Get.URL), http.StatusForbidden},
		{"expiry extended", strings.Replace(dl.Get.URL, "X-Amz-Expires=300", "X-Amz-Expires=604800", 1), http.StatusForbidden},
		{"credential changed", strings.Replace(dl.Get.URL, "X-Amz-Credential=scsync", "X-Amz-Credential=other", 1), http.StatusForbidden},
		{"signature removed", dl.Get.URL[:strings.Index(dl.Get.URL, "&X-Amz-Signature=")], http.StatusBadRequest},
	}
	for _, tt := range tests {
		if tt.url == dl.Get.URL {
			t.Fatalf("%s: URL unchanged: %s", tt.name, tt.url)
		}
		p := dl.Get
		p.URL = tt.url
		if a := send(t, p, nil, nil); a.Status != tt.status {
			t.Errorf("%s: GET = %d %s, want %d", tt.name, a.Status, a.Code, tt.status)
		}
	}
}

func TestExpiredURLsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.URLExpiry = time.Second })
	data, sha := randomBytes(t, 1000)
	big, bigSHA := randomBytes(t, int(9*filekey.MiB))
	ctx := context.Background()
	begin, err := e.svc.BeginUpload(ctx, clinicA, sha, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	if a := send(t, *begin.Put, data, nil); a.Status != http.StatusOK {
		t.Fatalf("fresh PUT = %d %s", a.Status, a.Code)
	}
	if _, err := e.svc.Complete(ctx, clinicA, sha); err != nil {
		t.Fatal(err)
	}
	dl, err := e.svc.DownloadURL(ctx, clinicA, sha)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.BeginUpload(ctx, clinicA, bigSHA, int64(len(big)), ""); err != nil {
		t.Fatal(err)
	}
	parts, err := e.svc.PartURLs(ctx, clinicA, bigSHA, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	testenv.CheckFor(t, 10*time.Second, 250*time.Millisecond, func() error {
		if a := send(t, dl.Get, nil, nil); a.Status != http.StatusForbidden {
			return errors.New("GET not expired yet")
		}
		return nil
	})
	// The part URL was signed after the GET: wait until it is past its own
	// expiry too (S3 times have one-second resolution).
	time.Sleep(time.Until(parts.Parts[0].Put.ExpiresAt.Add(1500 * time.Millisecond)))
	if a := send(t, parts.Parts[0].Put, big[:8*filekey.MiB], nil); a.Status != http.StatusForbidden {
		t.Errorf("expired part PUT = %d %s, want 403", a.Status, a.Code)
	}
	if a := send(t, dl.Get, nil, nil); a.Code != "AccessDenied" {
		t.Logf("expired GET answered %d %s", a.Status, a.Code)
	}
}

func TestSweepAbortsAbandonedUploads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	data, sha := randomBytes(t, int(9*filekey.MiB))
	if _, err := e.svc.BeginUpload(ctx, clinicA, sha, int64(len(data)), ""); err != nil {
		t.Fatal(err)
	}
	e.uploadParts(t, clinicA, tokenA, sha, data, 1)
	// An upload S3 has but no row names (a node died after creating it),
	// and one outside the files prefix that the sweep must leave alone.
	_, orphanSHA := randomBytes(t, 8)
	for _, k := range []string{filekey.Key(clinicB, orphanSHA), "other/object"} {
		if _, err := e.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &e.bucket, Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.svc.Sweep(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("Sweep(1h) = %d, %v; want nothing that young", n, err)
	}
	n, err := e.svc.Sweep(ctx, 0)
	if err != nil || n != 2 {
		t.Fatalf("Sweep(0) = %d, %v; want 2 aborted", n, err)
	}
	out, err := e.s3.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &e.bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 1 || aws.ToString(out.Uploads[0].Key) != "other/object" {
		t.Errorf("uploads after sweep = %d (first %v), want only other/object", len(out.Uploads), aws.ToString(out.Uploads[0].Key))
	}
	if f := e.row(t, clinicA, sha); f.State != filekey.StateFailed || f.Reason != reasonAbandoned || f.UploadID != "" {
		t.Errorf("row after sweep = %+v, want failed (abandoned)", f)
	}
	// The clinic comes back: begin starts afresh.
	again, err := e.svc.BeginUpload(ctx, clinicA, sha, int64(len(data)), "")
	if err != nil || again.UploadID == "" || again.State != filekey.StateUploading {
		t.Fatalf("begin after sweep = %+v, %v", again, err)
	}
}

// TestServerSideEncryptionPinned: SSE-S3 is on by default; the presigned
// PUT signs the header (a PUT without it is refused), multipart uploads are
// initiated with it, and S3 itself (HeadObject, not our bookkeeping) reports
// both objects encrypted.
func TestServerSideEncryptionPinned(t *testing.T) {
	t.Parallel()
	if DefaultConfig().ServerSideEncryption != "AES256" {
		t.Fatalf("DefaultConfig().ServerSideEncryption = %q, want AES256", DefaultConfig().ServerSideEncryption)
	}
	e := newEnv(t, nil)
	ctx := context.Background()
	data, sha := randomBytes(t, 100)
	begin, err := e.svc.BeginUpload(ctx, clinicA, sha, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if begin.Put.Header["X-Amz-Server-Side-Encryption"] != "AES256" {
		t.Fatalf("PUT headers %v, want X-Amz-Server-Side-Encryption: AES256 (signed)", begin.Put.Header)
	}
	// The header is part of the signature: leaving it out breaks it.
	stripped := *begin.Put
	stripped.Header = map[string]string{}
	for k, v := range begin.Put.Header {
		if k != "X-Amz-Server-Side-Encryption" {
			stripped.Header[k] = v
		}
	}
	if a := send(t, stripped, data, nil); a.Status/100 != 4 {
		t.Errorf("PUT without the SSE header = %d %s, want a 4xx refusal", a.Status, a.Code)
	}
	if a := send(t, *begin.Put, data, nil); a.Status != http.StatusOK {
		t.Fatalf("SSE PUT = %d %s, want 200 (MinIO needs MINIO_KMS_SECRET_KEY: scripts/stack.sh sets it)", a.Status, a.Code)
	}
	big, bigSHA := randomBytes(t, int(9*filekey.MiB))
	var mp filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, bigSHA), tokenA, filekey.BeginRequest{Size: int64(len(big))}, &mp)
	if mp.Mode != filekey.ModeMultipart {
		t.Fatalf("begin = %+v, want multipart", mp)
	}
	e.uploadParts(t, clinicA, tokenA, bigSHA, big, 1, 2)
	var f filekey.File
	e.mustCall(t, "POST", path(filekey.PathComplete, clinicA, bigSHA), tokenA, nil, &f)
	for _, s := range []string{sha, bigSHA} {
		head, err := e.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &e.bucket, Key: aws.String(filekey.Key(clinicA, s))})
		if err != nil {
			t.Fatal(err)
		}
		if head.ServerSideEncryption != s3types.ServerSideEncryptionAes256 {
			t.Errorf("HeadObject(%s).ServerSideEncryption = %q, want AES256", s[:8], head.ServerSideEncryption)
		}
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	_, sha := randomBytes(t, 10)
	_, small := randomBytes(t, 11)
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, small), tokenA, filekey.BeginRequest{Size: 5}, nil)
	tests := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"bad sha", "GET", path(filekey.PathFile, clinicA, "abc"), nil, 400, filekey.CodeInvalidSHA256},
		{"unknown file", "GET", path(filekey.PathFile, clinicA, sha), nil, 404, "not_found"},
		{"download unknown", "GET", path(filekey.PathDownload, clinicA, sha), nil, 404, "not_found"},
		{"negative size", "POST", path(filekey.PathUpload, clinicA, sha), filekey.BeginRequest{Size: -1}, 400, filekey.CodeInvalidSize},
		{"too large", "POST", path(filekey.PathUpload, clinicA, sha), filekey.BeginRequest{Size: 65 * filekey.GiB}, 400, filekey.CodeInvalidSize},
		{"bad content type", "POST", path(filekey.PathUpload, clinicA, sha), filekey.BeginRequest{Size: 1, ContentType: "a\nb"}, 400, "bad_request"},
		{"unknown field", "POST", path(filekey.PathUpload, clinicA, sha), map[string]any{"size": 1, "key": "clinics/1002/x"}, 400, "bad_request"},
		{"other size", "POST", path(filekey.PathUpload, clinicA, small), filekey.BeginRequest{Size: 6}, 409, filekey.CodeSizeConflict},
		{"parts of single", "POST", path(filekey.PathPartURLs, clinicA, small), filekey.PartURLsRequest{Parts: []int{1}}, 409, filekey.CodeNotMultipart},
		{"list parts unknown", "GET", path(filekey.PathParts, clinicA, sha), nil, 404, "not_found"},
		{"complete unknown", "POST", path(filekey.PathComplete, clinicA, sha), nil, 404, "not_found"},
		{"no token", "GET", path(filekey.PathFile, clinicA, sha), nil, 401, "unauthorized"},
	}
	for _, tt := range tests {
		token := tokenA
		if tt.name == "no token" {
			token = "x"
		}
		status, code := e.call(t, tt.method, tt.path, token, tt.body, nil)
		if status != tt.status || code != tt.code {
			t.Errorf("%s: %s %s = %d %s, want %d %s", tt.name, tt.method, tt.path, status, code, tt.status, tt.code)
		}
	}
	// Part numbers of a multipart upload.
	_, bigSHA := randomBytes(t, 12)
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, bigSHA), tokenA, filekey.BeginRequest{Size: 17 * filekey.MiB}, nil)
	for _, parts := range [][]int{{0}, {4}, {}, make([]int, 101)} {
		if status, code := e.call(t, "POST", path(filekey.PathPartURLs, clinicA, bigSHA), tokenA, filekey.PartURLsRequest{Parts: parts}, nil); status != 400 || code != filekey.CodeInvalidPart {
			t.Errorf("part-urls %v = %d %s, want 400 %s", parts, status, code, filekey.CodeInvalidPart)
		}
	}
	// Abort: the upload is gone and the file failed; a present file stays.
	var f filekey.File
	e.mustCall(t, "DELETE", path(filekey.PathUpload, clinicA, bigSHA), tokenA, nil, &f)
	if f.State != filekey.StateFailed {
		t.Errorf("abort = %+v, want failed", f)
	}
	if status, code := e.call(t, "POST", path(filekey.PathComplete, clinicA, bigSHA), tokenA, nil, nil); status != 409 || code != filekey.CodeNotUploading {
		t.Errorf("complete after abort = %d %s, want 409 %s", status, code, filekey.CodeNotUploading)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Bucket = "b"
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"defaults", func(*Config) {}, ""},
		{"no bucket", func(c *Config) { c.Bucket = "" }, "s3.bucket"},
		{"small parts", func(c *Config) { c.PartSize = 5 * filekey.MiB }, "files.part_size"},
		{"expiry", func(c *Config) { c.URLExpiry = 0 }, "files.url_expiry"},
		{"sse", func(c *Config) { c.ServerSideEncryption = "aws:kms" }, "files.server_side_encryption"},
		{"endpoint", func(c *Config) { c.PublicEndpoint = "s3.example.com" }, "files.public_endpoint"},
		{"abandon", func(c *Config) { c.AbandonAfter = time.Second }, "files.abandon_after"},
		{"grace", func(c *Config) { c.UnsyncedGrace = -time.Second }, "files.unsynced_grace"},
		{"cold is hot", func(c *Config) { c.ColdBucket = c.Bucket }, "files.cold_bucket"},
		{"cold class", func(c *Config) { c.ColdStorageClass = "DEEP_ARCHIVE" }, "files.cold_storage_class"},
		{"stale", func(c *Config) { c.StaleAfter = time.Second }, "files.stale_after"},
		{"cold ok", func(c *Config) { c.ColdBucket, c.ColdStorageClass = "cold", "STANDARD_IA" }, ""},
	}
	for _, tt := range tests {
		c := ok
		tt.mutate(&c)
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: Validate() = %v, want nil", tt.name, err)
		case tt.want != "" && (err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: Validate() = %v, want an error naming %s", tt.name, err, tt.want)
		}
	}
}

func TestPublicEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.PublicEndpoint = "https://files.example.com" })
	_, sha := randomBytes(t, 10)
	begin, err := e.svc.BeginUpload(context.Background(), clinicA, sha, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(begin.Put.URL, "https://files.example.com/"+e.bucket+"/clinics/") {
		t.Errorf("PUT URL %s, want the public endpoint", begin.Put.URL)
	}
}

// TestSweepSparesActiveUploads: an upload older than the limit that is
// still storing parts (a big file on a slow line) is not cut.
func TestSweepSparesActiveUploads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	data, sha := randomBytes(t, int(9*filekey.MiB))
	begin, err := e.svc.BeginUpload(ctx, clinicA, sha, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	testenv.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if time.Since(started) < 2*time.Second {
			return errors.New("upload younger than 2s")
		}
		return nil
	})
	e.uploadParts(t, clinicA, tokenA, sha, data, 1) // activity
	if n, err := e.svc.Sweep(ctx, 1500*time.Millisecond); err != nil || n != 0 {
		t.Fatalf("Sweep(1.5s) = %d, %v; want the active upload spared", n, err)
	}
	if f := e.row(t, clinicA, sha); f.State != filekey.StateUploading || f.UploadID != begin.UploadID {
		t.Fatalf("row after sweep = %+v, want the upload still open", f)
	}
	e.uploadParts(t, clinicA, tokenA, sha, data, 2)
	e.mustCall(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, nil)
}

// TestCheckFindsObjectGone (issue 16, verify's file sweep): GET …?check=true
// asks S3; a present file whose object was deleted behind the cloud's back
// turns failed with the reason, and the next begin uploads it again.
func TestCheckFindsObjectGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	data, sha := randomBytes(t, 10*1024)
	var begin filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(len(data))}, &begin)
	if a := send(t, *begin.Put, data, nil); a.Status != http.StatusOK {
		t.Fatalf("PUT = %d %s", a.Status, a.Code)
	}
	e.mustCall(t, "POST", path(filekey.PathComplete, clinicA, sha), tokenA, nil, nil)
	var f filekey.File
	e.mustCall(t, "GET", path(filekey.PathFile, clinicA, sha)+"?check=true", tokenA, nil, &f)
	if f.State != filekey.StatePresent {
		t.Fatalf("check of a stored file = %+v, want present", f)
	}
	key := filekey.Key(clinicA, sha)
	if _, err := e.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &e.bucket, Key: &key}); err != nil {
		t.Fatal(err)
	}
	e.mustCall(t, "GET", path(filekey.PathFile, clinicA, sha), tokenA, nil, &f)
	if f.State != filekey.StatePresent {
		t.Fatalf("plain stat = %+v, want present (it does not ask S3)", f)
	}
	e.mustCall(t, "GET", path(filekey.PathFile, clinicA, sha)+"?check=true", tokenA, nil, &f)
	if f.State != filekey.StateFailed || f.Reason != "object missing from S3" {
		t.Fatalf("check after the object was deleted = %+v, want failed: object missing from S3", f)
	}
	var again filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, sha), tokenA, filekey.BeginRequest{Size: int64(len(data))}, &again)
	if again.Present || again.Put == nil {
		t.Fatalf("begin after check = %+v, want a new upload", again)
	}
}
