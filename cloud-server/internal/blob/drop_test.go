package blob

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/scsync/scsync/shared/testenv"
)

// TestDropBucket: a bucket holding objects and an open multipart upload is
// emptied and deleted; dropping a bucket that is not there is an error.
func TestDropBucket(t *testing.T) {
	t.Parallel()
	cfg := testConfig("scsync-drop")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := New(cfg)
	if err := st.EnsureBucket(ctx); err != nil {
		testenv.Unavailable(t, "minio", err)
	}
	dropped := false
	t.Cleanup(func() {
		if !dropped {
			_ = DropBucket(context.Background(), st.s3, cfg.Bucket)
		}
	})
	for _, k := range []string{"a", "b/c"} {
		if _, err := st.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &cfg.Bucket, Key: aws.String(k), Body: strings.NewReader(k)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &cfg.Bucket, Key: aws.String("open")}); err != nil {
		t.Fatal(err)
	}
	if err := DropBucket(ctx, st.s3, cfg.Bucket); err != nil {
		t.Fatalf("DropBucket = %v", err)
	}
	dropped = true
	_, err := st.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &cfg.Bucket})
	var nf *s3types.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("HeadBucket after DropBucket = %v, want NotFound", err)
	}
	if err := DropBucket(ctx, st.s3, cfg.Bucket); err == nil {
		t.Fatal("DropBucket of a bucket that is not there = nil, want an error")
	}
}
