package files

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
)

// A file's life after upload (docs/files.md, "Un-synced files, archive and
// restore"):
//
//	present ──archive──► archiving ──► archived ──restore──► restoring ──► present
//	present | archived ──(unsynced for UnsyncedGrace)──► deleted ──begin──► uploading
//
// Every step is a conditional update of the row, so nodes running the same
// step at once agree on one winner; an S3 side effect that destroys data
// (deleting the source of a copy, deleting an expired object) happens only
// inside the transaction whose conditional update won, holding the row.

// reasonUnsynced is the reason of a file deleted after its grace period.
const reasonUnsynced = "no live record named the file for the grace period (un-synced or deleted in the cloud)"

// MarkUnsynced records, inside tx (the clinic's change transaction), that
// no live record of clinic names sha any more since at. Downloads are
// refused from then on; the sweep deletes the object after UnsyncedGrace.
func MarkUnsynced(tx *gorm.DB, clinic ids.ID, sha string, at time.Time) error {
	err := tx.Model(&File{}).Where("clinic_id = ? AND sha256 = ? AND unsynced_at IS NULL", clinic, sha).
		Update("unsynced_at", at.UTC()).Error
	if err != nil {
		return fmt.Errorf("files: mark %s unsynced: %w", sha, err)
	}
	return nil
}

// MarkSynced records, inside tx, that live records of clinic name shas
// again: the files are reachable again (if their objects were not deleted
// yet). A backfill's transaction marks all the files its records name at
// once, a statement per markSyncedMax of them.
func MarkSynced(tx *gorm.DB, clinic ids.ID, shas ...string) error {
	for len(shas) > 0 {
		n := min(len(shas), markSyncedMax)
		err := tx.Model(&File{}).Where("clinic_id = ? AND sha256 IN ? AND unsynced_at IS NOT NULL", clinic, shas[:n]).
			Update("unsynced_at", nil).Error
		if err != nil {
			return fmt.Errorf("files: mark %d files synced (%s…): %w", n, shas[0], err)
		}
		shas = shas[n:]
	}
	return nil
}

// markSyncedMax bounds the parameters of one MarkSynced statement.
const markSyncedMax = 5000

// ColdStorage reports whether a cold bucket is configured.
func (s *Service) ColdStorage() bool { return s.cfg.ColdBucket != "" }

// claim moves f from state from to state to if the row is still exactly
// as read (state and updated_at): the winner of nodes racing for the same
// step. Claiming a step already in to (from == to) takes over a stale one.
func (s *Service) claim(ctx context.Context, f File, from, to string) (File, bool, error) {
	now := s.now()
	res := s.db.WithContext(ctx).Model(&File{}).
		Where("clinic_id = ? AND sha256 = ? AND state = ? AND updated_at = ?", f.ClinicID, f.SHA256, from, f.UpdatedAt).
		Updates(map[string]any{"state": to, "updated_at": now})
	if res.Error != nil {
		return f, false, fmt.Errorf("files: update %s: %w", f.SHA256, res.Error)
	}
	if res.RowsAffected != 1 {
		return f, false, nil
	}
	f.State, f.UpdatedAt = to, now
	return f, true, nil
}

func (s *Service) stale(f File) bool { return f.UpdatedAt.Before(s.now().Add(-s.cfg.StaleAfter)) }

// Archive moves clinic's present file sha to the cold bucket (retention
// backup): copy, check the copy's size, then state archived and the hot
// object deleted in one step. Archiving an archived file is a no-op.
func (s *Service) Archive(ctx context.Context, clinic ids.ID, sha string) (filekey.File, error) {
	if !s.ColdStorage() {
		return filekey.File{}, ErrNoColdStorage
	}
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return filekey.File{}, err
	}
	for range 4 {
		f, err := s.get(ctx, clinic, sha)
		if err != nil {
			return filekey.File{}, err
		}
		var won bool
		switch {
		case f.State == filekey.StateArchived:
			return f.View(), nil
		case f.State == filekey.StatePresent:
			f, won, err = s.claim(ctx, f, filekey.StatePresent, filekey.StateArchiving)
		case f.State == filekey.StateArchiving && s.stale(f):
			f, won, err = s.claim(ctx, f, filekey.StateArchiving, filekey.StateArchiving)
		default:
			return f.View(), downloadableOr(f, ErrNotPresent)
		}
		if err != nil {
			return f.View(), err
		}
		if won {
			g, err := s.finishArchive(ctx, f)
			return g.View(), err
		}
	}
	return filekey.File{}, fmt.Errorf("files: archive %s: state kept changing", sha)
}

// Restore brings clinic's archived file sha back to the hot bucket: copy,
// check, then state present and the cold object deleted in one step.
// Restoring a present file is a no-op.
func (s *Service) Restore(ctx context.Context, clinic ids.ID, sha string) (filekey.File, error) {
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return filekey.File{}, err
	}
	for range 4 {
		f, err := s.get(ctx, clinic, sha)
		if err != nil {
			return filekey.File{}, err
		}
		var won bool
		switch {
		case f.State == filekey.StatePresent:
			return f.View(), nil
		case !s.ColdStorage() && (f.State == filekey.StateArchived || f.State == filekey.StateRestoring):
			return f.View(), ErrNoColdStorage
		case f.State == filekey.StateArchived:
			f, won, err = s.claim(ctx, f, filekey.StateArchived, filekey.StateRestoring)
		case f.State == filekey.StateRestoring && s.stale(f):
			f, won, err = s.claim(ctx, f, filekey.StateRestoring, filekey.StateRestoring)
		case f.State == filekey.StateRestoring:
			return f.View(), ErrRestoring
		case f.State == filekey.StateArchiving:
			return f.View(), ErrArchiving
		case f.State == filekey.StateDeleted:
			return f.View(), ErrDeleted
		default:
			return f.View(), ErrNotArchived
		}
		if err != nil {
			return f.View(), err
		}
		if won {
			g, err := s.finishRestore(ctx, f)
			return g.View(), err
		}
	}
	return filekey.File{}, fmt.Errorf("files: restore %s: state kept changing", sha)
}

// downloadableOr is downloadable(f), or def where f could be downloaded.
func downloadableOr(f File, def error) error {
	if err := downloadable(f); err != nil {
		return err
	}
	return def
}

func (s *Service) finishArchive(ctx context.Context, f File) (File, error) {
	if err := s.copyChecked(ctx, f, s.cfg.Bucket, s.cfg.ColdBucket, s.cfg.ColdStorageClass); err != nil {
		return f, err
	}
	now := s.now()
	won, err := s.commitMove(ctx, f, filekey.StateArchiving, map[string]any{"state": filekey.StateArchived, "archived_at": now}, s.cfg.Bucket)
	if err != nil || !won {
		g, gerr := s.get(ctx, f.ClinicID, f.SHA256)
		return g, errors.Join(err, gerr)
	}
	s.m.archived.Inc()
	s.log.Info("file archived", "clinic", f.ClinicID, "sha256", f.SHA256, "size", f.Size)
	f.State, f.ArchivedAt = filekey.StateArchived, &now
	return f, nil
}

func (s *Service) finishRestore(ctx context.Context, f File) (File, error) {
	if err := s.copyChecked(ctx, f, s.cfg.ColdBucket, s.cfg.Bucket, ""); err != nil {
		return f, err
	}
	won, err := s.commitMove(ctx, f, filekey.StateRestoring, map[string]any{"state": filekey.StatePresent, "archived_at": nil}, s.cfg.ColdBucket)
	if err != nil || !won {
		g, gerr := s.get(ctx, f.ClinicID, f.SHA256)
		return g, errors.Join(err, gerr)
	}
	s.m.restored.Inc()
	s.log.Info("file restored", "clinic", f.ClinicID, "sha256", f.SHA256, "size", f.Size)
	f.State, f.ArchivedAt = filekey.StatePresent, nil
	return f, nil
}

// commitMove ends a copy: in one transaction, the row goes from state from
// to set (if no other node ended it first) and the copy's source object in
// bucket is deleted. A failed delete rolls the state back, so the step is
// retried and no object is ever left without a row that knows it.
func (s *Service) commitMove(ctx context.Context, f File, from string, set map[string]any, bucket string) (bool, error) {
	won := false
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		set["updated_at"] = s.now()
		res := tx.Model(&File{}).Where("clinic_id = ? AND sha256 = ? AND state = ?", f.ClinicID, f.SHA256, from).Updates(set)
		if res.Error != nil || res.RowsAffected != 1 {
			return res.Error
		}
		if _, err := s.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(f.Key())}); err != nil {
			return fmt.Errorf("files: delete %s from %s: %w", f.SHA256, bucket, err)
		}
		won = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("files: move %s: %w", f.SHA256, err)
	}
	return won, nil
}

// copyChecked copies f's object from one bucket to the other (same key) and
// checks the copy has f's size. A copy a previous attempt completed, whose
// source is already gone, is accepted as it is.
func (s *Service) copyChecked(ctx context.Context, f File, from, to, class string) error {
	err := s.copyObject(ctx, from, to, f.Key(), f.Size, class)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("files: copy %s from %s to %s: %w", f.SHA256, from, to, err)
	}
	head, herr := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(to), Key: aws.String(f.Key())})
	if herr != nil {
		return fmt.Errorf("files: copy %s from %s to %s: %w", f.SHA256, from, to, errors.Join(err, herr))
	}
	if got := aws.ToInt64(head.ContentLength); got != f.Size {
		return fmt.Errorf("files: copy %s to %s has %d bytes, want %d", f.SHA256, to, got, f.Size)
	}
	return nil
}

// S3 copies one object of up to 5 GiB in one request; larger ones are
// copied in parts (UploadPartCopy). Variables so a test can exercise the
// multipart path with small objects.
var (
	copySingleMax int64 = 5 * filekey.GiB
	copyPartSize  int64 = 512 * filekey.MiB
)

// copyObject copies key from bucket from to bucket to, server side (no byte
// passes through the cloud node), with storage class class when set.
func (s *Service) copyObject(ctx context.Context, from, to, key string, size int64, class string) error {
	src := aws.String(from + "/" + key) // keys are [a-z0-9/]: nothing to escape
	if size <= copySingleMax {
		in := &s3.CopyObjectInput{Bucket: aws.String(to), Key: aws.String(key), CopySource: src}
		if class != "" {
			in.StorageClass = s3types.StorageClass(class)
		}
		if s.cfg.ServerSideEncryption != "" {
			in.ServerSideEncryption = s3types.ServerSideEncryption(s.cfg.ServerSideEncryption)
		}
		_, err := s.s3.CopyObject(ctx, in)
		return err
	}
	in := &s3.CreateMultipartUploadInput{Bucket: aws.String(to), Key: aws.String(key)}
	if class != "" {
		in.StorageClass = s3types.StorageClass(class)
	}
	if s.cfg.ServerSideEncryption != "" {
		in.ServerSideEncryption = s3types.ServerSideEncryption(s.cfg.ServerSideEncryption)
	}
	up, err := s.s3.CreateMultipartUpload(ctx, in)
	if err != nil {
		return err
	}
	abort := func(err error) error {
		_, aerr := s.s3.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: aws.String(to), Key: aws.String(key), UploadId: up.UploadId})
		if aerr != nil && !isCode(aerr, "NoSuchUpload") {
			s.log.Warn("abort multipart copy failed", "key", key, "err", aerr)
		}
		return err
	}
	var parts []s3types.CompletedPart
	for n, off := int32(1), int64(0); off < size; n, off = n+1, off+copyPartSize {
		end := min(off+copyPartSize, size) - 1
		out, err := s.s3.UploadPartCopy(ctx, &s3.UploadPartCopyInput{Bucket: aws.String(to), Key: aws.String(key), UploadId: up.UploadId,
			PartNumber: aws.Int32(n), CopySource: src, CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, end))})
		if err != nil {
			return abort(err)
		}
		parts = append(parts, s3types.CompletedPart{PartNumber: aws.Int32(n), ETag: out.CopyPartResult.ETag})
	}
	_, err = s.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(to), Key: aws.String(key),
		UploadId: up.UploadId, MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		return abort(err)
	}
	return nil
}

// ExpireUnsynced deletes from S3 (hot or cold bucket) the objects of files
// no live record has named for Config.UnsyncedGrace, and marks them
// deleted with the reason and time; the rows stay as the trail. Each file
// is one transaction holding its row (SKIP LOCKED: nodes sweeping at once
// take different files), so a record synced again meanwhile either comes
// first (the file is spared) or waits and finds it deleted (the clinic
// uploads it again). It returns how many objects it deleted.
func (s *Service) ExpireUnsynced(ctx context.Context) (int, error) {
	cutoff := s.now().Add(-s.cfg.UnsyncedGrace)
	states := []string{filekey.StatePresent}
	if s.ColdStorage() {
		// Archived objects are in the cold bucket: without it configured
		// they wait (and are not in the way of the others).
		states = append(states, filekey.StateArchived)
	}
	n := 0
	for {
		found := false
		err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			var f File
			err := tx.Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"}).
				Where("unsynced_at <= ? AND state IN ?", cutoff, states).
				Order("unsynced_at").Take(&f).Error
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			found = true
			bucket := s.cfg.Bucket
			if f.State == filekey.StateArchived {
				bucket = s.cfg.ColdBucket
			}
			if _, err := s.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(f.Key())}); err != nil {
				return fmt.Errorf("files: delete %s: %w", f.SHA256, err)
			}
			now := s.now()
			if err := tx.Model(&File{}).Where("clinic_id = ? AND sha256 = ?", f.ClinicID, f.SHA256).Updates(map[string]any{
				"state": filekey.StateDeleted, "reason": reasonUnsynced, "removed_at": now, "updated_at": now,
				"upload_id": "", "upload_started_at": nil}).Error; err != nil {
				return err
			}
			s.log.Info("unsynced file deleted", "clinic", f.ClinicID, "sha256", f.SHA256, "from", f.State, "unsynced_at", f.UnsyncedAt)
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("files: expire unsynced: %w", err)
		}
		if !found {
			return n, nil
		}
		n++
		s.m.deleted.Inc()
	}
}

// ResumeStale finishes the archives and restores a node left half done
// (in progress for Config.StaleAfter). It returns how many it finished.
func (s *Service) ResumeStale(ctx context.Context) (int, error) {
	var rows []File
	err := s.db.WithContext(ctx).Where("state IN ? AND updated_at < ?",
		[]string{filekey.StateArchiving, filekey.StateRestoring}, s.now().Add(-s.cfg.StaleAfter)).Limit(100).Find(&rows).Error
	if err != nil {
		return 0, fmt.Errorf("files: find stale moves: %w", err)
	}
	n := 0
	var errs []error
	for _, f := range rows {
		var err error
		if f.State == filekey.StateArchiving {
			_, err = s.Archive(ctx, f.ClinicID, f.SHA256)
		} else {
			_, err = s.Restore(ctx, f.ClinicID, f.SHA256)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Counts are a clinic's files by state; Unsynced counts those no live
// record names (whatever their state).
type Counts struct {
	ByState  map[string]int64 `json:"by_state"`
	Unsynced int64            `json:"unsynced"`
}

// Count returns clinic's file counts.
func (s *Service) Count(ctx context.Context, clinic ids.ID) (Counts, error) {
	c := Counts{ByState: map[string]int64{}}
	var rows []struct {
		State string
		N     int64
	}
	db := s.db.WithContext(ctx).Model(&File{}).Where("clinic_id = ?", clinic)
	if err := db.Select("state, count(*) AS n").Group("state").Scan(&rows).Error; err != nil {
		return c, fmt.Errorf("files: count: %w", err)
	}
	for _, r := range rows {
		c.ByState[r.State] = r.N
	}
	if err := s.db.WithContext(ctx).Model(&File{}).Where("clinic_id = ? AND unsynced_at IS NOT NULL", clinic).
		Count(&c.Unsynced).Error; err != nil {
		return c, fmt.Errorf("files: count: %w", err)
	}
	return c, nil
}
