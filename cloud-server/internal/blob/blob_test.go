package blob

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/scsync/scsync/shared/testenv"
)

// testConfig is the development MinIO (or SCSYNC_TEST_S3_*) with a bucket
// named for the test, prefix first.
func testConfig(prefix string) Config {
	return Config{
		Endpoint:  testenv.Env("SCSYNC_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"),
		AccessKey: testenv.Env("SCSYNC_TEST_S3_ACCESS_KEY", "scsync"),
		SecretKey: testenv.Env("SCSYNC_TEST_S3_SECRET_KEY", "scsync-secret"),
		Region:    "us-east-1", PathStyle: true,
		Bucket: strings.ReplaceAll(testenv.Name(prefix), "_", "-"),
	}
}

// TestEnsureBucketRequiresEncryption: the bucket sc-cloud makes has SSE-S3
// as its default encryption and a policy denying PUTs without it, both read
// back from S3; an object put without asking is still stored encrypted.
func TestEnsureBucketRequiresEncryption(t *testing.T) {
	t.Parallel()
	cfg := testConfig("scsync-blob")
	cfg.ServerSideEncryption = "AES256"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := New(cfg)
	if err := st.EnsureBucket(ctx); err != nil {
		testenv.Unavailable(t, "minio (with MINIO_KMS_SECRET_KEY)", err)
	}
	key := "probe"
	t.Cleanup(func() {
		_, _ = st.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: &cfg.Bucket, Key: &key})
		_, _ = st.s3.DeleteBucket(context.Background(), &s3.DeleteBucketInput{Bucket: &cfg.Bucket})
	})
	// Twice: a restart applies it again without error.
	if err := st.EnsureBucket(ctx); err != nil {
		t.Fatalf("EnsureBucket again = %v", err)
	}
	enc, err := st.s3.GetBucketEncryption(ctx, &s3.GetBucketEncryptionInput{Bucket: &cfg.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	rules := enc.ServerSideEncryptionConfiguration.Rules
	if len(rules) != 1 || rules[0].ApplyServerSideEncryptionByDefault == nil ||
		rules[0].ApplyServerSideEncryptionByDefault.SSEAlgorithm != s3types.ServerSideEncryptionAes256 {
		t.Errorf("bucket encryption = %+v, want AES256 by default", rules)
	}
	pol, err := st.s3.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: &cfg.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Statement []struct {
			Effect    string
			Action    any
			Condition map[string]map[string]any
		}
	}
	if err := json.Unmarshal([]byte(aws.ToString(pol.Policy)), &doc); err != nil {
		t.Fatalf("policy %s: %v", aws.ToString(pol.Policy), err)
	}
	var denyMissing, denyOther bool
	for _, s := range doc.Statement {
		if s.Effect != "Deny" {
			continue
		}
		if _, ok := s.Condition["Null"]["s3:x-amz-server-side-encryption"]; ok {
			denyMissing = true
		}
		if _, ok := s.Condition["StringNotEquals"]["s3:x-amz-server-side-encryption"]; ok {
			denyOther = true
		}
	}
	if !denyMissing || !denyOther {
		t.Errorf("bucket policy %s: want Deny statements for a missing and for another x-amz-server-side-encryption", aws.ToString(pol.Policy))
	}
	// The bucket's default encrypts even a PUT that does not ask.
	if _, err := st.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &cfg.Bucket, Key: &key, Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	head, err := st.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &cfg.Bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	if head.ServerSideEncryption != s3types.ServerSideEncryptionAes256 {
		t.Errorf("HeadObject.ServerSideEncryption = %q, want AES256", head.ServerSideEncryption)
	}
}
