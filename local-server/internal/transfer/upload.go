package transfer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/shared/filekey"
)

// urlMargin: a presigned URL this close to its expiry is refreshed first.
const urlMargin = 5 * time.Second

// upload sends t's file unless the cloud already has it, then asks the
// cloud to complete (verify) it.
func (w *Worker) upload(ctx context.Context, t *Transfer, live *atomic.Int64) error {
	f, err := openSource(t)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only
	begin, err := w.cloud.BeginUpload(ctx, t.SHA256, t.Size, t.ContentType)
	if err != nil {
		return err
	}
	if begin.Present {
		w.log.Debug("file already in the cloud", "sha256", t.SHA256)
		return nil
	}
	switch begin.Mode {
	case filekey.ModeSingle:
		err = w.uploadSingle(ctx, t, f, begin, live)
	case filekey.ModeMultipart:
		err = w.uploadMultipart(ctx, t, f, begin, live)
	default:
		err = permanent(fmt.Errorf("transfer: cloud chose unknown upload mode %q", begin.Mode))
	}
	if err != nil {
		return err
	}
	return w.complete(ctx, t)
}

// checksumRefused reports S3 refusing a body whose SHA-256 is not the
// signed one: the file on disk is not the one that was hashed.
func checksumRefused(err error) bool {
	var e *S3Error
	return errors.As(err, &e) && e.Status == http.StatusBadRequest &&
		(e.Code == "XAmzContentChecksumMismatch" || e.Code == "BadDigest" || e.Code == "InvalidDigest")
}

func (w *Worker) uploadSingle(ctx context.Context, t *Transfer, f *os.File, begin filekey.BeginResponse, live *atomic.Int64) error {
	put := begin.Put
	if put == nil {
		return permanent(errors.New("transfer: cloud sent no PUT for a single upload"))
	}
	live.Store(0)
	var last error
	err := w.retry(ctx, func(try int) error {
		if try > 0 && (s3Status(last) == http.StatusForbidden || time.Now().After(put.ExpiresAt.Add(-urlMargin))) {
			b, err := w.cloud.BeginUpload(ctx, t.SHA256, t.Size, t.ContentType)
			if err != nil {
				last = err
				return err
			}
			if b.Present || b.Put == nil {
				return nil // a previous try did arrive
			}
			put = b.Put
		}
		_, last = w.put(ctx, *put, f, 0, t.Size, live)
		return last
	})
	if checksumRefused(err) {
		return permanent(fmt.Errorf("%w: S3 refused it as not matching sha256 %s", ErrLocalChanged, t.SHA256))
	}
	if err == nil {
		w.bytesSent.Add(t.Size)
	}
	return err
}

// uploadMultipart sends the parts S3 does not hold yet. What S3 holds is
// the truth (ListParts); the local part rows are brought in line with it,
// so a restart after a crash sends only the parts that were in flight.
func (w *Worker) uploadMultipart(ctx context.Context, t *Transfer, f *os.File, begin filekey.BeginResponse, live *atomic.Int64) error {
	if begin.PartSize <= 0 || begin.UploadID == "" || begin.PartCount != filekey.PartCount(t.Size, begin.PartSize) {
		return permanent(fmt.Errorf("transfer: cloud sent an inconsistent part layout %d × %d for %d bytes", begin.PartCount, begin.PartSize, t.Size))
	}
	db := w.db.WithContext(ctx)
	if t.UploadID != begin.UploadID || t.PartSize != begin.PartSize {
		// A new upload (first attempt, or the old one was swept): parts
		// recorded for another upload mean nothing.
		if err := db.Where("transfer_id = ?", t.ID).Delete(&Part{}).Error; err != nil {
			return fmt.Errorf("transfer: reset parts: %w", err)
		}
		if err := db.Model(&Transfer{}).Where("id = ?", t.ID).Updates(map[string]any{"upload_id": begin.UploadID, "part_size": begin.PartSize}).Error; err != nil {
			return fmt.Errorf("transfer: record upload: %w", err)
		}
		t.UploadID, t.PartSize = begin.UploadID, begin.PartSize
	}
	listed, err := w.cloud.ListParts(ctx, t.SHA256)
	if err != nil {
		return err
	}
	if listed.UploadID != t.UploadID {
		return fmt.Errorf("transfer: the cloud's upload changed under us (%s)", t.SHA256)
	}
	stored := map[int]filekey.Part{}
	for _, p := range listed.Parts {
		if _, size, ok := filekey.PartRange(t.Size, t.PartSize, p.Number); ok && size == p.Size {
			stored[p.Number] = p
		}
	}
	var local []Part
	if err := db.Where("transfer_id = ?", t.ID).Find(&local).Error; err != nil {
		return fmt.Errorf("transfer: read parts: %w", err)
	}
	recorded := map[int]bool{}
	for _, p := range local {
		if _, ok := stored[p.Number]; !ok || p.UploadID != t.UploadID {
			db.Where("transfer_id = ? AND number = ?", t.ID, p.Number).Delete(&Part{})
			continue
		}
		recorded[p.Number] = true
	}
	var confirmed atomic.Int64
	for n, p := range stored {
		confirmed.Add(p.Size)
		if !recorded[n] { // stored by S3, but we died before writing it down
			if err := w.recordPart(ctx, t, p); err != nil {
				return err
			}
		}
	}
	var missing []int
	for n := 1; n <= begin.PartCount; n++ {
		if _, ok := stored[n]; !ok {
			missing = append(missing, n)
		}
	}
	live.Store(confirmed.Load())
	w.saveProgress(ctx, t.ID, confirmed.Load())
	w.log.Info("multipart upload", "sha256", t.SHA256, "parts", begin.PartCount, "stored", len(stored), "to_send", len(missing))

	g, gctx := errgroup.WithContext(ctx)
	next := make(chan int)
	g.Go(func() error {
		defer close(next)
		for _, n := range missing {
			select {
			case next <- n:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for range min(w.opt.PartConcurrency, len(missing)) {
		g.Go(func() error {
			for n := range next {
				size, err := w.sendPart(gctx, t, f, n, live)
				if err != nil {
					return err
				}
				w.saveProgress(gctx, t.ID, confirmed.Add(size))
			}
			return nil
		})
	}
	return g.Wait()
}

// sendPart uploads part n, fetching a fresh URL when the one it has is
// refused or about to expire, and records it once S3 accepted it.
func (w *Worker) sendPart(ctx context.Context, t *Transfer, f *os.File, n int, live *atomic.Int64) (int64, error) {
	off, size, ok := filekey.PartRange(t.Size, t.PartSize, n)
	if !ok {
		return 0, permanent(fmt.Errorf("transfer: part %d outside the file", n))
	}
	var url *filekey.PartURL
	var etag string
	var last error
	err := w.retry(ctx, func(int) error {
		if url == nil || s3Status(last) == http.StatusForbidden || time.Now().After(url.Put.ExpiresAt.Add(-urlMargin)) {
			r, err := w.cloud.PartURLs(ctx, t.SHA256, []int{n})
			if err != nil {
				last = err
				return err
			}
			if r.UploadID != t.UploadID || len(r.Parts) != 1 || r.Parts[0].Number != n || r.Parts[0].Size != size {
				last = fmt.Errorf("transfer: the cloud's upload of %s changed", t.SHA256)
				return permanent(last) // not for this attempt; the transfer retries from begin
			}
			url = &r.Parts[0]
		}
		etag, last = w.put(ctx, url.Put, f, off, size, live)
		return last
	})
	if err != nil {
		var p *permanentError
		if errors.As(err, &p) && !errors.Is(err, ErrLocalChanged) {
			return 0, p.err // only permanent for this attempt
		}
		return 0, fmt.Errorf("transfer: part %d: %w", n, err)
	}
	if err := w.recordPart(ctx, t, filekey.Part{Number: n, Size: size, ETag: etag}); err != nil {
		return 0, err
	}
	w.partsSent.Add(1)
	w.bytesSent.Add(size)
	return size, nil
}

func (w *Worker) recordPart(ctx context.Context, t *Transfer, p filekey.Part) error {
	row := Part{TransferID: t.ID, Number: p.Number, UploadID: t.UploadID, Size: p.Size, ETag: p.ETag, SentAt: time.Now().UTC()}
	if err := w.db.WithContext(ctx).Clauses(clause.OnConflict{UpdateAll: true}).Create(&row).Error; err != nil {
		return fmt.Errorf("transfer: record part %d: %w", p.Number, err)
	}
	return nil
}

// complete asks the cloud to finish and verify the upload. When the cloud
// rejects the stored bytes, the local file is hashed again: if it changed,
// the transfer fails for good; if not, the next attempt starts over.
func (w *Worker) complete(ctx context.Context, t *Transfer) error {
	var f filekey.File
	err := w.retry(ctx, func(int) error {
		var err error
		f, err = w.cloud.Complete(ctx, t.SHA256)
		return err
	})
	if cloudCode(err) == filekey.CodeVerifyFailed {
		if sha, size, herr := HashFile(t.Path); herr == nil && (sha != t.SHA256 || size != t.Size) {
			return permanent(fmt.Errorf("%w: now sha256 %s", ErrLocalChanged, sha))
		}
		return err
	}
	if err != nil {
		return err
	}
	if f.State != filekey.StatePresent {
		return fmt.Errorf("transfer: cloud completed %s as %s", t.SHA256, f.State)
	}
	return nil
}
