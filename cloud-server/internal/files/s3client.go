package files

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scsync/scsync/cloud-server/internal/blob"
)

// NewS3Client returns an S3 client configured like blob.New (request
// checksums only when required, path style for MinIO). Presigned URLs are
// signed with its credentials; a client never sees them.
func NewS3Client(c blob.Config) *s3.Client {
	return s3.NewFromConfig(c.AWSConfig(), func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
	})
}
