package files

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scsync/scsync/shared/filekey"
)

// reasonAbandoned is the failed reason of a swept upload.
const reasonAbandoned = "multipart upload abandoned and aborted by the sweep"

// Sweep aborts the multipart uploads that saw no activity (initiation or a
// part stored) for olderThan and marks their files failed (a clinic that
// comes back begins a new upload). A slow upload that keeps sending parts
// is never cut, however long it takes. Parts of an abandoned upload cost
// storage but are invisible in listings, so without this they would be
// paid for forever. It returns how many uploads it aborted. Safe to run on
// every node at once.
func (s *Service) Sweep(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := s.now().Add(-olderThan)
	n := 0
	// Every upload S3 lists. MinIO lists uploads bucket-wide or for one
	// exact key only (not by a prefix such as "clinics/"), so list the
	// bucket and keep the keys that are ours.
	var errs []error
	p := s3.NewListMultipartUploadsPaginator(s.s3, &s3.ListMultipartUploadsInput{Bucket: &s.cfg.Bucket})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("files: list multipart uploads: %w", err))
			break
		}
		for _, u := range page.Uploads {
			key, id := aws.ToString(u.Key), aws.ToString(u.UploadId)
			if u.Initiated == nil || !u.Initiated.Before(cutoff) {
				continue
			}
			clinic, sha, err := filekey.ParseKey(key)
			if err != nil {
				continue // not a file of ours
			}
			if active, err := s.activeSince(ctx, key, id, cutoff); err != nil || active {
				if err != nil {
					errs = append(errs, err)
				}
				continue
			}
			s.abortUpload(ctx, key, id)
			n++
			f := File{ClinicID: clinic, SHA256: sha}
			if _, err := s.update(ctx, f, filekey.StateUploading, id, map[string]any{"state": filekey.StateFailed,
				"reason": reasonAbandoned, "upload_id": "", "upload_started_at": nil}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Rows whose upload S3 did not list (already gone, or a store that
	// cannot list): forget the upload id.
	var stale []File
	err := s.db.WithContext(ctx).Where("state = ? AND upload_id <> '' AND upload_started_at < ?", filekey.StateUploading, cutoff).
		Limit(1000).Find(&stale).Error
	if err != nil {
		errs = append(errs, fmt.Errorf("files: find stale uploads: %w", err))
	}
	for _, f := range stale {
		if active, err := s.activeSince(ctx, f.Key(), f.UploadID, cutoff); err != nil || active {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		s.abortUpload(ctx, f.Key(), f.UploadID)
		ok, err := s.update(ctx, f, filekey.StateUploading, f.UploadID, map[string]any{"state": filekey.StateFailed,
			"reason": reasonAbandoned, "upload_id": "", "upload_started_at": nil})
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			n++
		}
	}
	s.m.swept.Add(float64(n))
	if n > 0 {
		s.log.Info("abandoned uploads aborted", "count", n, "older_than", olderThan)
	}
	return n, errors.Join(errs...)
}

// activeSince reports whether the upload stored a part after cutoff. An
// upload S3 no longer has is not active.
func (s *Service) activeSince(ctx context.Context, key, uploadID string, cutoff time.Time) (bool, error) {
	p := s3.NewListPartsPaginator(s.s3, &s3.ListPartsInput{Bucket: &s.cfg.Bucket, Key: aws.String(key), UploadId: aws.String(uploadID)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if isCode(err, "NoSuchUpload") {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("files: list parts of %s: %w", key, err)
		}
		for _, pt := range page.Parts {
			if pt.LastModified != nil && pt.LastModified.After(cutoff) {
				return true, nil
			}
		}
	}
	return false, nil
}

// Run sweeps every Config.SweepInterval until ctx ends (and returns nil):
// abandoned uploads, files un-synced past their grace period, archives and
// restores a dead node left half done.
// With SweepInterval 0 it returns at once.
func (s *Service) Run(ctx context.Context) error {
	if s.cfg.SweepInterval <= 0 {
		return nil
	}
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := s.Sweep(ctx, s.cfg.AbandonAfter); err != nil && ctx.Err() == nil {
				s.log.Warn("sweep failed", "err", err)
			}
			if _, err := s.ExpireUnsynced(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("unsynced file expiry failed", "err", err)
			}
			if _, err := s.ResumeStale(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("resuming stale archive or restore failed", "err", err)
			}
		}
	}
}
