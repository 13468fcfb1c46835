package transfer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"gorm.io/gorm"
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
	var adopted []Part
	for n, p := range stored {
		confirmed.Add(p.Size)
		if !recorded[n] { // stored by S3, but we died before writing it down
			adopted = append(adopted, partRow(t, p))
		}
	}
	var missing []int
	for n := 1; n <= begin.PartCount; n++ {
		if _, ok := stored[n]; !ok {
			missing = append(missing, n)
		}
	}
	live.Store(confirmed.Load())
	if err := w.recordParts(ctx, t.ID, adopted, confirmed.Load()); err != nil {
		return err
	}
	w.log.Info("multipart upload", "sha256", t.SHA256, "parts", begin.PartCount, "stored", len(stored), "to_send", len(missing))

	urls := &partURLs{w: w, t: t, order: missing, batch: partURLBatch,
		cache: map[int]filekey.PartURL{}, handed: map[int]bool{}}
	log := &partLog{w: w, t: t, done: &confirmed}
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
				p, err := w.sendPart(gctx, t, f, n, urls, live)
				if err != nil {
					return err
				}
				if err := log.add(gctx, p); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err = g.Wait()
	// What S3 acknowledged is written down even when another part failed,
	// so the next attempt's ListParts has nothing to adopt. (Not writing
	// it loses nothing either: S3's list is the truth.)
	if ferr := log.flush(context.WithoutCancel(ctx)); err == nil {
		err = ferr
	}
	return err
}

// partURLBatch is how many part URLs the clinic asks for at once: one
// request to the cloud per 16 parts (256 MiB at the default part size)
// instead of one per part. A URL is valid for the cloud's URLExpiry (5
// minutes by default) from when it was signed; a part that starts later is
// signed again (see partURLs.get), so a slow line costs requests, never a
// failed part. Clouds cap a request at their MaxPartURLs (100 by default);
// one that refuses a batch as invalid_part is asked one part at a time.
const partURLBatch = 16

// partURLs hands out presigned part URLs, fetching them in batches in the
// order the parts are sent.
type partURLs struct {
	w     *Worker
	t     *Transfer
	order []int // the parts to send, in sending order
	batch int

	mu     sync.Mutex
	cache  map[int]filekey.PartURL // fetched, not handed out yet
	handed map[int]bool            // parts given a URL at least once
}

// get returns a URL for part n that is not about to expire; fresh forces a
// new one (S3 refused the one before).
func (u *partURLs) get(ctx context.Context, n int, size int64, fresh bool) (filekey.PartURL, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if p, ok := u.cache[n]; ok && !fresh && time.Now().Before(p.Put.ExpiresAt.Add(-urlMargin)) {
		delete(u.cache, n)
		u.handed[n] = true
		return p, nil
	}
	// n and the next parts (in sending order) not handed out yet that
	// have no fresh URL. Parts are taken in order but by several senders,
	// so a later part may ask first: the batch starts at the first part
	// not yet handed out, not at n.
	want := []int{n}
	for _, m := range u.order {
		if len(want) >= u.batch {
			break
		}
		if m == n || u.handed[m] {
			continue
		}
		if p, ok := u.cache[m]; !ok || time.Now().After(p.Put.ExpiresAt.Add(-urlMargin)) {
			want = append(want, m)
		}
	}
	r, err := u.w.cloud.PartURLs(ctx, u.t.SHA256, want)
	if len(want) > 1 && cloudCode(err) == filekey.CodeInvalidPart {
		// A cloud with a lower MaxPartURLs: one at a time from now on.
		u.batch, want = 1, want[:1]
		r, err = u.w.cloud.PartURLs(ctx, u.t.SHA256, want)
	}
	if err != nil {
		return filekey.PartURL{}, err
	}
	if r.UploadID != u.t.UploadID {
		return filekey.PartURL{}, permanent(fmt.Errorf("transfer: the cloud's upload of %s changed", u.t.SHA256))
	}
	var got *filekey.PartURL
	for _, p := range r.Parts {
		if _, psize, ok := filekey.PartRange(u.t.Size, u.t.PartSize, p.Number); !ok || psize != p.Size {
			return filekey.PartURL{}, permanent(fmt.Errorf("transfer: the cloud's upload of %s changed", u.t.SHA256))
		}
		if p.Number == n {
			got = &p
			continue
		}
		u.cache[p.Number] = p
	}
	if got == nil || got.Size != size {
		return filekey.PartURL{}, permanent(fmt.Errorf("transfer: the cloud's upload of %s changed", u.t.SHA256))
	}
	u.handed[n] = true
	return *got, nil
}

// sendPart uploads part n, fetching a fresh URL when the one it has is
// refused or about to expire, and returns the row to record once S3
// accepted it.
func (w *Worker) sendPart(ctx context.Context, t *Transfer, f *os.File, n int, urls *partURLs, live *atomic.Int64) (Part, error) {
	off, size, ok := filekey.PartRange(t.Size, t.PartSize, n)
	if !ok {
		return Part{}, permanent(fmt.Errorf("transfer: part %d outside the file", n))
	}
	var url *filekey.PartURL
	var etag string
	var last error
	err := w.retry(ctx, func(int) error {
		if url == nil || s3Status(last) == http.StatusForbidden || time.Now().After(url.Put.ExpiresAt.Add(-urlMargin)) {
			u, err := urls.get(ctx, n, size, url != nil)
			if err != nil {
				last = err
				return err // permanent ones: not for this attempt; the transfer retries from begin
			}
			url = &u
		}
		etag, last = w.put(ctx, url.Put, f, off, size, live)
		return last
	})
	if err != nil {
		var p *permanentError
		if errors.As(err, &p) && !errors.Is(err, ErrLocalChanged) {
			return Part{}, p.err // only permanent for this attempt
		}
		return Part{}, fmt.Errorf("transfer: part %d: %w", n, err)
	}
	w.partsSent.Add(1)
	w.bytesSent.Add(size)
	return partRow(t, filekey.Part{Number: n, Size: size, ETag: etag}), nil
}

func partRow(t *Transfer, p filekey.Part) Part {
	return Part{TransferID: t.ID, Number: p.Number, UploadID: t.UploadID, Size: p.Size, ETag: p.ETag, SentAt: time.Now().UTC()}
}

// Part progress is committed in batches: one SQLite transaction (one
// fsync) for the parts S3 acknowledged in the last partFlushEvery, or
// partFlushParts of them, with the transfer's bytes done, instead of two
// commits per part. A crash loses no progress that matters: on resume the
// cloud's list of stored parts is the truth, and parts S3 holds that were
// not written down are adopted (docs/files.md, Resume).
const (
	partFlushParts = 8
	partFlushEvery = time.Second
)

// partLog gathers acknowledged parts and commits them in batches.
type partLog struct {
	w    *Worker
	t    *Transfer
	done *atomic.Int64 // bytes S3 acknowledged

	mu      sync.Mutex
	pending []Part
	last    time.Time
}

func (l *partLog) add(ctx context.Context, p Part) error {
	l.done.Add(p.Size)
	l.mu.Lock()
	if l.last.IsZero() {
		l.last = time.Now()
	}
	l.pending = append(l.pending, p)
	due := len(l.pending) >= partFlushParts || time.Since(l.last) >= partFlushEvery
	l.mu.Unlock()
	if !due {
		return nil
	}
	return l.flush(ctx)
}

func (l *partLog) flush(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = time.Now()
	if len(l.pending) == 0 {
		return nil
	}
	if err := l.w.recordParts(ctx, l.t.ID, l.pending, l.done.Load()); err != nil {
		return err
	}
	l.pending = l.pending[:0]
	return nil
}

// recordParts writes parts S3 holds and the transfer's bytes done in one
// transaction.
func (w *Worker) recordParts(ctx context.Context, id int64, parts []Part, done int64) error {
	err := w.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if len(parts) > 0 {
			if err := tx.Clauses(clause.OnConflict{UpdateAll: true}).Create(&parts).Error; err != nil {
				return err
			}
		}
		return tx.Model(&Transfer{}).Where("id = ?", id).Update("bytes_done", done).Error
	})
	if err != nil {
		return fmt.Errorf("transfer: record %d parts: %w", len(parts), err)
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
