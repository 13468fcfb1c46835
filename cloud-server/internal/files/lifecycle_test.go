package files

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scsync/scsync/shared/filekey"
)

// Objects over S3's single-copy limit are archived and restored with a
// multipart copy (UploadPartCopy); the limit is lowered so a 12 MiB file
// takes that path (5 MiB parts). Not parallel: it changes package limits.
func TestArchiveRestoreMultipartCopy(t *testing.T) {
	single, part := copySingleMax, copyPartSize
	copySingleMax, copyPartSize = filekey.MiB, 5*filekey.MiB
	t.Cleanup(func() { copySingleMax, copyPartSize = single, part })
	_, cold := testS3(t)
	e := newEnv(t, func(c *Config) { c.ColdBucket = cold })
	ctx := context.Background()
	data, sha := randomBytes(t, 12<<20)
	key := filekey.Key(clinicA, sha)
	if _, err := e.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &e.bucket, Key: aws.String(key), Body: bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data)))}); err != nil {
		t.Fatal(err)
	}
	if b, err := e.svc.BeginUpload(ctx, clinicA, sha, int64(len(data)), ""); err != nil || !b.Present {
		t.Fatalf("BeginUpload(stored) = %+v, %v", b, err)
	}

	f, err := e.svc.Archive(ctx, clinicA, sha)
	if err != nil || f.State != filekey.StateArchived {
		t.Fatalf("Archive = %+v, %v", f, err)
	}
	if e.objectExists(t, key) {
		t.Fatal("archived object still in the hot bucket")
	}
	head, err := e.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &cold, Key: aws.String(key)})
	if err != nil || aws.ToInt64(head.ContentLength) != int64(len(data)) {
		t.Fatalf("cold HeadObject = %v; want %d bytes", err, len(data))
	}
	if _, err := e.svc.DownloadURL(ctx, clinicA, sha); !errors.Is(err, ErrArchived) {
		t.Fatalf("DownloadURL(archived) = %v, want ErrArchived", err)
	}
	if f, err := e.svc.Restore(ctx, clinicA, sha); err != nil || f.State != filekey.StatePresent {
		t.Fatalf("Restore = %+v, %v", f, err)
	}
	dl, err := e.svc.DownloadURL(ctx, clinicA, sha)
	if err != nil {
		t.Fatal(err)
	}
	if a := send(t, dl.Get, nil, nil); a.Status != http.StatusOK || hexSHA(a.Body) != sha {
		t.Fatalf("GET restored = %d, sha %s; want %s", a.Status, hexSHA(a.Body), sha)
	}
	if _, err := e.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &cold, Key: aws.String(key)}); !isNotFound(err) {
		t.Fatalf("cold HeadObject after restore = %v, want not found", err)
	}
}

// A deleted file's upload that begins while its record is synced again must
// not bring the un-synced mark back: BeginUpload read the row (deleted,
// un-synced) before the clinic's change transaction cleared the mark
// (MarkSynced) and updated it after, so the file came back present and
// refused its downloads as un-synced. Without the race, an upload of a
// file still un-synced gets a fresh grace period.
func TestBeginUploadKeepsASyncAgainThatRaced(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	spent := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	for _, raced := range []bool{true, false} {
		_, sha := randomBytes(t, 1000)
		if err := e.db.Create(&File{ClinicID: clinicA, SHA256: sha, State: filekey.StateDeleted, Size: 1000,
			CreatedAt: spent, UpdatedAt: spent, UnsyncedAt: &spent, RemovedAt: &spent}).Error; err != nil {
			t.Fatal(err)
		}
		calls := 0
		e.svc.now = func() time.Time {
			// The second call is update's, after BeginUpload read the row.
			if calls++; calls == 2 && raced {
				if err := MarkSynced(e.db, clinicA, sha); err != nil {
					t.Error(err)
				}
			}
			return time.Now().UTC()
		}
		if _, err := e.svc.BeginUpload(ctx, clinicA, sha, 1000, ""); err != nil {
			t.Fatal(err)
		}
		f := e.row(t, clinicA, sha)
		switch {
		case f.State != filekey.StateUploading:
			t.Errorf("raced %v: state %s, want uploading", raced, f.State)
		case raced && f.UnsyncedAt != nil:
			t.Errorf("a sync again during the upload's begin was undone: unsynced_at %v", f.UnsyncedAt)
		case !raced && (f.UnsyncedAt == nil || !f.UnsyncedAt.After(spent)):
			t.Errorf("an upload of a file still un-synced: unsynced_at %v, want a fresh grace period after %v", f.UnsyncedAt, spent)
		}
	}
}
