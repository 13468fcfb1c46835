package app

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scsync/scsync/cloud-server/internal/blob"
	"github.com/scsync/scsync/cloud-server/internal/config"
	"github.com/scsync/scsync/cloud-server/internal/files"
)

// dropBucketAtEnd empties and deletes the bucket of cfg (as set now),
// which sc-cloud creates at start, when the test ends. Register it before
// the node starts: cleanups run last-registered first, so the node has
// stopped by then.
func dropBucketAtEnd(t *testing.T, cfg config.Config) {
	t.Helper()
	c := cfg.S3
	s3c := files.NewS3Client(blob.Config{Endpoint: c.Endpoint, AccessKey: c.AccessKey, SecretKey: c.SecretKey,
		Region: c.Region, PathStyle: true})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		objs := s3.NewListObjectsV2Paginator(s3c, &s3.ListObjectsV2Input{Bucket: &c.Bucket})
		for objs.HasMorePages() {
			page, err := objs.NextPage(ctx)
			if err != nil {
				break // no bucket (the node never made it), or S3 gone: DeleteBucket says
			}
			for _, o := range page.Contents {
				_, _ = s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &c.Bucket, Key: o.Key})
			}
		}
		if _, err := s3c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &c.Bucket}); err != nil {
			t.Logf("delete bucket %s: %v", c.Bucket, err)
		}
	})
}
