package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/scsync/scsync/shared/filekey"
)

// partSuffix names the file a download grows in until it is verified.
const partSuffix = ".part"

// fileMode of downloaded files: patient images, not for other users.
const fileMode = 0o600

// download fetches t's file into t.Path: bytes go into Path+".part",
// resuming from its length with a Range request after an interruption; the
// file is renamed into place only after its SHA-256 matched, so no reader
// ever sees a partial or corrupt image under the real name.
func (w *Worker) download(ctx context.Context, t *Transfer, live *atomic.Int64) error {
	if _, err := os.Stat(t.Path); err == nil {
		// A previous attempt renamed it into place and then died.
		sha, size, err := HashFile(t.Path)
		if err != nil {
			return err
		}
		if sha != t.SHA256 {
			return permanent(fmt.Errorf("transfer: %s exists with other content", t.Path))
		}
		t.Size = size
		return nil
	}
	dl, err := w.cloud.DownloadURL(ctx, t.SHA256)
	if err != nil {
		return err
	}
	if dl.SHA256 != t.SHA256 || (t.Size != 0 && dl.Size != t.Size) {
		return permanent(fmt.Errorf("transfer: cloud offers %s of %d bytes, want %s of %d", dl.SHA256, dl.Size, t.SHA256, t.Size))
	}
	if t.Size == 0 {
		t.Size = dl.Size
		w.db.WithContext(ctx).Model(&Transfer{}).Where("id = ?", t.ID).Update("size", t.Size)
	}
	if err := os.MkdirAll(filepath.Dir(t.Path), 0o700); err != nil {
		return permanent(fmt.Errorf("transfer: %w", err))
	}
	part := t.Path + partSuffix
	fh, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return permanent(fmt.Errorf("transfer: %w", err))
	}
	defer func() { _ = fh.Close() }() // after a successful Close, a no-op error
	fi, err := fh.Stat()
	if err != nil {
		return err
	}
	have := fi.Size()
	if have > t.Size {
		if err := fh.Truncate(0); err != nil {
			return err
		}
		have = 0
	}
	// Hash what an earlier attempt left, then go on hashing as bytes arrive:
	// the file is read once more only for the resumed prefix.
	h := sha256.New()
	if have > 0 {
		if _, err := io.Copy(h, io.NewSectionReader(fh, 0, have)); err != nil {
			return err
		}
		w.log.Info("download resumed", "sha256", t.SHA256, "have", have, "size", t.Size)
	}
	live.Store(have)
	get := dl.Get
	var last error
	err = w.retry(ctx, func(try int) error {
		if have == t.Size {
			return nil
		}
		if try > 0 && (s3Status(last) == http.StatusForbidden || time.Now().After(get.ExpiresAt.Add(-urlMargin))) {
			d, err := w.cloud.DownloadURL(ctx, t.SHA256)
			if err != nil {
				last = err
				return err
			}
			get = d.Get
		}
		have, last = w.get(ctx, get, fh, h, have, t.Size, live)
		w.saveProgress(ctx, t.ID, have)
		return last
	})
	if err != nil {
		return err
	}
	if err := fh.Sync(); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != t.SHA256 {
		_ = fh.Close()
		_ = os.Remove(part)
		return permanent(fmt.Errorf("%w: got %s, want %s", ErrChecksum, got, t.SHA256))
	}
	if err := fh.Close(); err != nil {
		return err
	}
	if err := os.Rename(part, t.Path); err != nil {
		return err
	}
	syncDir(filepath.Dir(t.Path))
	return nil
}

// countingHash counts what it hashed, so the file can be cut back to
// exactly the hashed bytes after a failed write.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// get fetches bytes [have, size) with the presigned GET p, appending them
// to fh and h, and returns how many bytes fh and h now hold.
func (w *Worker) get(ctx context.Context, p filekey.Presigned, fh *os.File, h hash.Hash, have, size int64, live *atomic.Int64) (int64, error) {
	var last atomic.Int64
	ctx, stop := w.watch(ctx, &last)
	defer stop()
	req, err := http.NewRequestWithContext(ctx, p.Method, p.URL, nil)
	if err != nil {
		return have, permanent(err)
	}
	p.Request(req.Header)
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := w.http.Do(req)
	if err != nil {
		if errors.Is(context.Cause(ctx), errStalled) {
			return have, fmt.Errorf("%w: %w", errStalled, redact(err))
		}
		return have, fmt.Errorf("transfer: GET: %w", redact(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		if cr := resp.Header.Get("Content-Range"); !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", have)) {
			return have, fmt.Errorf("transfer: asked for bytes %d-, got %q", have, cr)
		}
	case resp.StatusCode == http.StatusOK:
		if have > 0 { // the Range was ignored: start over
			if err := fh.Truncate(0); err != nil {
				return have, err
			}
			h.Reset()
			live.Add(-have)
			have = 0
		}
	default:
		return have, s3Error(resp)
	}
	if _, err := fh.Seek(have, io.SeekStart); err != nil {
		return have, err
	}
	ch := &countingHash{h: h}
	m := &meter{ctx: ctx, lim: w.lim, last: &last, live: live}
	_, err = io.Copy(io.MultiWriter(fh, ch, m), io.LimitReader(resp.Body, size-have))
	if ch.n != m.count {
		live.Add(ch.n - m.count)
	}
	have += ch.n
	// A write that failed half way may have left bytes the hash has not
	// seen: cut the file back to what was hashed.
	if terr := fh.Truncate(have); terr != nil && err == nil {
		err = terr
	}
	if err != nil {
		if errors.Is(context.Cause(ctx), errStalled) {
			return have, fmt.Errorf("%w: %w", errStalled, err)
		}
		return have, fmt.Errorf("transfer: GET body: %w", err)
	}
	if have != size {
		return have, fmt.Errorf("transfer: GET ended at %d of %d bytes", have, size)
	}
	return have, nil
}

// syncDir makes a rename durable where the platform allows it.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
