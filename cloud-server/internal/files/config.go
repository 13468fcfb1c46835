package files

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/scsync/scsync/shared/filekey"
)

// Config of the file service. The zero value is not usable: start from
// DefaultConfig. The lead folds these into sc-cloud's config under `files:`
// (s3.bucket and friends stay in the s3 section).
type Config struct {
	// Bucket holding every clinic's files (s3.bucket).
	Bucket string `yaml:"-"`
	// PublicEndpoint, when set, is the S3 endpoint written into presigned
	// URLs (e.g. https://s3.example.com) if clinics reach S3 under another
	// name than the cloud nodes do. The signature covers the host, so this
	// must be exactly what clinics connect to.
	PublicEndpoint string `yaml:"public_endpoint"`
	// URLExpiry is how long a presigned URL is valid (default 5m). A part
	// PUT must start within it; a started transfer is not cut off.
	URLExpiry time.Duration `yaml:"url_expiry"`
	// MultipartThreshold: files of this size or more use multipart upload
	// (default 16 MiB); smaller files use one PUT.
	MultipartThreshold int64 `yaml:"multipart_threshold"`
	// PartSize is the preferred part size (default 16 MiB, at least 8 MiB);
	// it grows for files that would need more than 10,000 parts.
	PartSize int64 `yaml:"part_size"`
	// MaxSize bounds one file (default 64 GiB).
	MaxSize int64 `yaml:"max_size"`
	// ServerSideEncryption is "AES256" (SSE-S3, the default: S3 encrypts
	// with keys it manages; MinIO needs a KMS, e.g. MINIO_KMS_SECRET_KEY) or
	// "" (off). It is pinned in the presigned PUT's signature, set on
	// multipart initiations and copies, and sc-cloud makes its buckets
	// require it (default encryption and a policy denying other PUTs).
	ServerSideEncryption string `yaml:"server_side_encryption"`
	// MaxPartURLs bounds the part URLs one request may ask for (default 100).
	MaxPartURLs int `yaml:"max_part_urls"`
	// AbandonAfter: Run aborts multipart uploads initiated longer ago than
	// this (default 24h) and marks their files failed.
	AbandonAfter time.Duration `yaml:"abandon_after"`
	// SweepInterval is how often Run sweeps (default 1h; 0 disables Run).
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// UnsyncedGrace: a file no live record has named for this long (its
	// records were un-synced or deleted in the cloud) is deleted from S3
	// by the sweep (default 168h; 0 deletes at the next sweep).
	UnsyncedGrace time.Duration `yaml:"unsynced_grace"`
	// ColdBucket receives the objects retention backs up ("" = no cold
	// storage: the backup retention mode is refused). Same credentials
	// and endpoint as s3.
	ColdBucket string `yaml:"cold_bucket"`
	// ColdStorageClass, when set, is the S3 storage class of the objects
	// copied into ColdBucket (STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING,
	// GLACIER_IR: classes read without a restore request). MinIO knows
	// none but STANDARD: leave it empty there.
	ColdStorageClass string `yaml:"cold_storage_class"`
	// StaleAfter: an archive or restore in progress for this long (a node
	// died during the copy) is taken over by the next sweep (default 1h).
	StaleAfter time.Duration `yaml:"stale_after"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		URLExpiry:            5 * time.Minute,
		ServerSideEncryption: sseS3,
		MultipartThreshold:   16 * filekey.MiB,
		PartSize:             16 * filekey.MiB,
		MaxSize:              64 * filekey.GiB,
		MaxPartURLs:          100,
		AbandonAfter:         24 * time.Hour,
		SweepInterval:        time.Hour,
		UnsyncedGrace:        7 * 24 * time.Hour,
		StaleAfter:           time.Hour,
	}
}

// coldClasses are the storage classes an archived object may have: those
// S3 reads (and copies back) without a restore request first.
var coldClasses = []string{"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"}

// SSE-S3, the one server-side encryption mode supported.
const sseS3 = "AES256"

// Validate names the first setting that is wrong.
func (c Config) Validate() error {
	var errs []error
	if c.Bucket == "" {
		errs = append(errs, errors.New("s3.bucket is required"))
	}
	if c.PublicEndpoint != "" {
		if u, err := url.Parse(c.PublicEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("files.public_endpoint must be an http(s) URL"))
		}
	}
	if c.URLExpiry < time.Second || c.URLExpiry > 7*24*time.Hour {
		errs = append(errs, errors.New("files.url_expiry must be 1s..168h (S3's limit)"))
	}
	if c.PartSize < filekey.MinPartSize || c.PartSize > filekey.MaxPartSize {
		errs = append(errs, fmt.Errorf("files.part_size must be %d..%d bytes", filekey.MinPartSize, filekey.MaxPartSize))
	}
	if c.MultipartThreshold < 1 || c.MultipartThreshold > filekey.MaxPartSize {
		errs = append(errs, fmt.Errorf("files.multipart_threshold must be 1..%d bytes", filekey.MaxPartSize))
	}
	if c.MaxSize < 1 || c.MaxSize > filekey.MaxParts*filekey.MaxPartSize {
		errs = append(errs, errors.New("files.max_size must be positive and at most 10,000 × 5 GiB"))
	}
	if c.ServerSideEncryption != "" && c.ServerSideEncryption != sseS3 {
		errs = append(errs, errors.New(`files.server_side_encryption must be "" or "AES256"`))
	}
	if c.MaxPartURLs < 1 || c.MaxPartURLs > filekey.MaxParts {
		errs = append(errs, errors.New("files.max_part_urls must be 1..10000"))
	}
	if c.AbandonAfter < time.Minute {
		errs = append(errs, errors.New("files.abandon_after must be at least 1m"))
	}
	if c.SweepInterval < 0 {
		errs = append(errs, errors.New("files.sweep_interval must not be negative"))
	}
	if c.UnsyncedGrace < 0 {
		errs = append(errs, errors.New("files.unsynced_grace must not be negative"))
	}
	if c.ColdBucket != "" && c.ColdBucket == c.Bucket {
		errs = append(errs, errors.New("files.cold_bucket must differ from s3.bucket"))
	}
	if c.ColdStorageClass != "" && !slices.Contains(coldClasses, c.ColdStorageClass) {
		errs = append(errs, fmt.Errorf("files.cold_storage_class must be one of %s", strings.Join(coldClasses, ", ")))
	}
	if c.StaleAfter < time.Minute {
		errs = append(errs, errors.New("files.stale_after must be at least 1m"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}
