package stack

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// S3 returns a client of the development MinIO, path-style, with the
// checksums an S3-compatible store may not support only when required.
func (e Env) S3() *s3.Client {
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String(e.S3Endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(e.S3AccessKey, e.S3SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// BucketName returns a fresh bucket name; DeleteBucketAtClose removes it.
func BucketName(prefix string) string { return strings.ReplaceAll(Name(prefix), "_", "-") }

// CreateBucket creates bucket; cleanup empties and deletes it.
func (e Env) CreateBucket(ctx context.Context, cl *Cleanup, bucket string) error {
	if _, err := e.S3().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	e.DeleteBucketAtClose(cl, bucket)
	return nil
}

// DeleteBucketAtClose makes cleanup empty and delete bucket (made by a
// server) if it exists.
func (e Env) DeleteBucketAtClose(cl *Cleanup, bucket string) {
	cl.Add(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.deleteBucket(ctx, bucket); err != nil {
			e.Log.Warn("bucket not deleted", "bucket", bucket, "err", err)
		}
	})
}

func (e Env) deleteBucket(ctx context.Context, bucket string) error {
	c := e.S3()
	var nsb *types.NoSuchBucket
	ups, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if errors.As(err, &nsb) || (err != nil && strings.Contains(err.Error(), "NoSuchBucket")) {
		return nil
	}
	if err == nil {
		for _, u := range ups.Uploads {
			_, _ = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: u.Key, UploadId: u.UploadId})
		}
	}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, o := range page.Contents {
			if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: o.Key}); err != nil {
				return err
			}
		}
	}
	_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)})
	return err
}
