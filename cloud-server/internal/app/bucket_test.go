package app

import (
	"context"
	"testing"
	"time"

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
		if err := blob.DropBucket(ctx, s3c, c.Bucket); err != nil {
			t.Log(err)
		}
	})
}
