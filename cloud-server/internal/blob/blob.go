// Package blob is sc-cloud's handle on S3: the client configured for the
// object store (MinIO in development), the bucket check used by /readyz.
// Presigned URLs for image files build on it.
package blob

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Config locates the bucket.
type Config struct {
	Endpoint, Region, Bucket, AccessKey, SecretKey string
	PathStyle                                      bool
	// ServerSideEncryption, "AES256" (SSE-S3, sc-cloud's default) or ""
	// (off), is what EnsureBucket makes the bucket require.
	ServerSideEncryption string
	// TLS, when set, is the S3 client's TLS configuration (a private CA).
	TLS *tls.Config
}

// AWSConfig is the SDK configuration for c: request checksums only when an
// operation requires them (the SDK's default CRC32 headers break some
// S3-compatible stores and presigned uploads), c's credentials and TLS.
func (c Config) AWSConfig() aws.Config {
	cfg := aws.Config{
		Region:                     c.Region,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if c.AccessKey != "" {
		cfg.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, "")
	}
	if c.TLS != nil {
		cfg.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.TLSClientConfig = c.TLS.Clone()
		})
	}
	return cfg
}

// Store is the S3 client bound to one bucket.
type Store struct {
	s3     *s3.Client
	bucket string
	sse    string
}

// New returns a client. Request checksums are computed only when an
// operation requires them: the SDK's default CRC32 headers break some
// S3-compatible stores and presigned uploads.
func New(c Config) *Store {
	cl := s3.NewFromConfig(c.AWSConfig(), func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
	})
	return &Store{s3: cl, bucket: c.Bucket, sse: c.ServerSideEncryption}
}

// EnsureBucket creates the bucket when it does not exist and, with
// server-side encryption on, sets (again, on every start: an operator's
// change is put back) the bucket's default encryption and a policy that
// denies any PUT that does not ask for it.
func (s *Store) EnsureBucket(ctx context.Context) error {
	if _, err := s.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)}); err != nil {
		_, err := s.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.bucket)})
		var owned *s3types.BucketAlreadyOwnedByYou
		if err != nil && !errors.As(err, &owned) {
			return fmt.Errorf("blob: create bucket %s: %w", s.bucket, err)
		}
	}
	if s.sse == "" {
		return nil
	}
	_, err := s.s3.PutBucketEncryption(ctx, &s3.PutBucketEncryptionInput{Bucket: aws.String(s.bucket),
		ServerSideEncryptionConfiguration: &s3types.ServerSideEncryptionConfiguration{Rules: []s3types.ServerSideEncryptionRule{{
			ApplyServerSideEncryptionByDefault: &s3types.ServerSideEncryptionByDefault{SSEAlgorithm: s3types.ServerSideEncryption(s.sse)},
		}}}})
	if err != nil {
		return fmt.Errorf("blob: default encryption of bucket %s: %w", s.bucket, err)
	}
	if _, err := s.s3.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(s.bucket),
		Policy: aws.String(EncryptionPolicy(s.bucket, s.sse))}); err != nil {
		return fmt.Errorf("blob: policy of bucket %s: %w", s.bucket, err)
	}
	return nil
}

// EncryptionPolicy is the bucket policy that refuses unencrypted uploads:
// a PUT (single or multipart initiation) that does not ask for sse, or asks
// for another mode, is denied to every principal (AWS's documented pair of
// statements; S3 applies the initiation's encryption to its parts).
func EncryptionPolicy(bucket, sse string) string {
	type statement struct {
		Sid       string                       `json:"Sid"`
		Effect    string                       `json:"Effect"`
		Principal string                       `json:"Principal"`
		Action    string                       `json:"Action"`
		Resource  string                       `json:"Resource"`
		Condition map[string]map[string]string `json:"Condition"`
	}
	res := "arn:aws:s3:::" + bucket + "/*"
	p := struct {
		Version   string      `json:"Version"`
		Statement []statement `json:"Statement"`
	}{Version: "2012-10-17", Statement: []statement{
		{Sid: "DenyIncorrectEncryptionHeader", Effect: "Deny", Principal: "*", Action: "s3:PutObject", Resource: res,
			Condition: map[string]map[string]string{"StringNotEquals": {"s3:x-amz-server-side-encryption": sse}}},
		{Sid: "DenyUnencryptedObjectUploads", Effect: "Deny", Principal: "*", Action: "s3:PutObject", Resource: res,
			Condition: map[string]map[string]string{"Null": {"s3:x-amz-server-side-encryption": "true"}}},
	}}
	b, _ := json.Marshal(p) // plain strings: cannot fail
	return string(b)
}

// Ping checks the bucket is reachable.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)}); err != nil {
		return fmt.Errorf("bucket %s: %w", s.bucket, err)
	}
	return nil
}

// DropBucket empties bucket (its open multipart uploads and its objects)
// and deletes it. It is for buckets of a test or a throw-away server
// (filesd); sc-cloud never deletes its own. Listing stops at the first
// error (no bucket, or S3 gone), and DeleteBucket's error says which.
func DropBucket(ctx context.Context, c *s3.Client, bucket string) error {
	ups := s3.NewListMultipartUploadsPaginator(c, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	for ups.HasMorePages() {
		page, err := ups.NextPage(ctx)
		if err != nil {
			break
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
		return fmt.Errorf("blob: delete bucket %s: %w", bucket, err)
	}
	return nil
}
