package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scsync/scsync/shared/testenv"
)

// dropBucketAtEnd empties and deletes bucket, which the cloud nodes create
// at start, when the test ends: its objects, open multipart uploads and
// the bucket itself. Register it before the nodes start: cleanups run
// last-registered first, so the nodes have stopped by then.
func dropBucketAtEnd(t *testing.T, bucket string) {
	t.Helper()
	c := s3.NewFromConfig(aws.Config{
		Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
			testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"), ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"))
		o.UsePathStyle = true
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ups := s3.NewListMultipartUploadsPaginator(c, &s3.ListMultipartUploadsInput{Bucket: &bucket})
		for ups.HasMorePages() {
			page, err := ups.NextPage(ctx)
			if err != nil {
				break // no bucket (no node made it), or S3 gone: DeleteBucket says
			}
			for _, u := range page.Uploads {
				_, _ = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: u.Key, UploadId: u.UploadId})
			}
		}
		objs := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket})
		for objs.HasMorePages() {
			page, err := objs.NextPage(ctx)
			if err != nil {
				break
			}
			for _, o := range page.Contents {
				_, _ = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: o.Key})
			}
		}
		if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket}); err != nil {
			t.Logf("delete bucket %s: %v", bucket, err)
		}
	})
}
