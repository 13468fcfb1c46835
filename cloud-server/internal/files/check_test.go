package files

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// putSmall uploads data as clinic in one PUT and completes it (present).
func (e *env) putSmall(t *testing.T, clinic ids.ID, token string, data []byte, sha string) {
	t.Helper()
	var begin filekey.BeginResponse
	e.mustCall(t, "POST", path(filekey.PathUpload, clinic, sha), token, filekey.BeginRequest{Size: int64(len(data))}, &begin)
	if a := send(t, *begin.Put, data, nil); a.Status != http.StatusOK {
		t.Fatalf("PUT = %d %s", a.Status, a.Code)
	}
	e.mustCall(t, "POST", path(filekey.PathComplete, clinic, sha), token, nil, nil)
}

// TestCheckMany (verify's file sweep, batched): POST …/files/check answers
// each requested file in order as the single check does — present, turned
// failed when its object was deleted behind the cloud's back (the row
// too), left alone when not present — and a file the clinic has no row for
// as an entry with code not_found, also when another clinic holds the same
// SHA-256 (a clinic learns nothing of another's files). Bad SHA-256s and
// more than MaxCheck files are refused whole; another clinic's id is a 404.
func TestCheckMany(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	present, shaPresent := randomBytes(t, 1000)
	gone, shaGone := randomBytes(t, 2000)
	others, shaOthers := randomBytes(t, 3000)
	_, shaUnknown := randomBytes(t, 10)
	_, shaOpen := randomBytes(t, 4000)
	e.putSmall(t, clinicA, tokenA, present, shaPresent)
	e.putSmall(t, clinicA, tokenA, gone, shaGone)
	e.putSmall(t, clinicB, tokenB, others, shaOthers)
	e.mustCall(t, "POST", path(filekey.PathUpload, clinicA, shaOpen), tokenA, filekey.BeginRequest{Size: 4000}, nil)
	key := filekey.Key(clinicA, shaGone)
	if _, err := e.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &e.bucket, Key: &key}); err != nil {
		t.Fatal(err)
	}

	asked := []string{shaPresent, shaGone, shaUnknown, shaOthers, strings.ToUpper(shaPresent), shaOpen}
	var resp filekey.CheckResponse
	e.mustCall(t, "POST", path(filekey.PathCheck, clinicA, ""), tokenA, filekey.CheckRequest{SHA256: asked}, &resp)
	want := []string{
		shaPresent + " present ",
		shaGone + " failed object missing from S3",
		shaUnknown + " not_found",
		shaOthers + " not_found",
		shaPresent + " present ",
		shaOpen + " uploading ",
	}
	if len(resp.Files) != len(want) {
		t.Fatalf("check of %d files answered %d: %+v", len(asked), len(resp.Files), resp.Files)
	}
	for i, f := range resp.Files {
		got := f.SHA256 + " " + f.Code
		if f.File != nil {
			got = f.SHA256 + " " + f.File.State + " " + f.File.Reason
			if f.File.SHA256 != f.SHA256 || f.Code != "" {
				t.Errorf("entry %d = %+v (file %+v), want the file of its sha256 and no code", i, f, *f.File)
			}
		}
		if got != want[i] {
			t.Errorf("entry %d = %q, want %q", i, got, want[i])
		}
	}
	if f := e.row(t, clinicA, shaGone); f.State != filekey.StateFailed || f.Reason != "object missing from S3" {
		t.Errorf("row of the deleted object after the check = %s %q, want failed", f.State, f.Reason)
	}
	if f := e.row(t, clinicB, shaOthers); f.State != filekey.StatePresent {
		t.Errorf("clinic B's file after clinic A's check = %s, want present", f.State)
	}

	// The bound: MaxCheck files are answered, one more is refused.
	many := make([]string, filekey.MaxCheck+1)
	for i := range many {
		many[i] = fmt.Sprintf("%064x", i)
	}
	var full filekey.CheckResponse
	e.mustCall(t, "POST", path(filekey.PathCheck, clinicA, ""), tokenA, filekey.CheckRequest{SHA256: many[:filekey.MaxCheck]}, &full)
	if len(full.Files) != filekey.MaxCheck || full.Files[filekey.MaxCheck-1].Code != httpapi.CodeNotFound {
		t.Errorf("check of MaxCheck unknown files answered %d entries, want %d not_found", len(full.Files), filekey.MaxCheck)
	}
	for _, c := range []struct {
		name   string
		clinic ids.ID
		shas   []string
		status int
		code   string
	}{
		{"too many", clinicA, many, http.StatusBadRequest, filekey.CodeTooManyFiles},
		{"bad sha256", clinicA, []string{shaPresent, "../" + shaPresent[3:]}, http.StatusBadRequest, filekey.CodeInvalidSHA256},
		{"short sha256", clinicA, []string{"abc"}, http.StatusBadRequest, filekey.CodeInvalidSHA256},
		{"another clinic's id", clinicB, []string{shaOthers}, http.StatusNotFound, httpapi.CodeNotFound},
	} {
		if status, code := e.call(t, "POST", path(filekey.PathCheck, c.clinic, ""), tokenA, filekey.CheckRequest{SHA256: c.shas}, nil); status != c.status || code != c.code {
			t.Errorf("%s: POST check = %d %s, want %d %s", c.name, status, code, c.status, c.code)
		}
	}
}
