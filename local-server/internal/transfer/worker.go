package transfer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/shared/filekey"
)

// Options tune a Worker; zero values take the defaults.
type Options struct {
	// Concurrency is how many transfers run at once (default 2).
	Concurrency int
	// PartConcurrency is how many parts of one upload are in flight
	// (default 2). Memory does not grow with it: parts stream from disk.
	PartConcurrency int
	// RequestRetries is how often one S3 request is tried before the
	// transfer is put back in the queue (default 5).
	RequestRetries int
	// RetryBase and RetryMax bound the exponential backoff between tries
	// and between attempts of a transfer (default 1s and 5m).
	RetryBase, RetryMax time.Duration
	// MaxAttempts fails a transfer after this many failed attempts; 0 (the
	// default) retries transient errors (offline, cloud down) forever.
	// Permanent errors (a local file gone or changed, a corrupt download)
	// fail at once.
	MaxAttempts int
	// StallTimeout cuts a request during which no byte moved for this long
	// (default 60s), so a silently dead connection is noticed.
	StallTimeout time.Duration
	// BytesPerSecond caps the bandwidth of all transfers together (0: none).
	BytesPerSecond int64
	// Poll is how often the queue is checked without a Kick (default 2s).
	Poll time.Duration
	// HTTPClient sends the presigned requests (default: no overall timeout,
	// bounded connect and response-header waits).
	HTTPClient *http.Client
	// TLS, when set, is the default HTTPClient's TLS configuration (a
	// private CA of the object store).
	TLS *tls.Config
	// Hold, when set, is asked before an upload starts: a positive wait
	// keeps it queued that long, with reason shown on the transfer (a file
	// of a record outside the sync scope, a backfill file outside its
	// window). It must be quick.
	Hold func(ctx context.Context, t Transfer) (wait time.Duration, reason string, err error)
	// OnChange, when set, is called after a transfer changes state (not on
	// mere progress), e.g. to emit Uploading/Downloading events. It must
	// not block.
	OnChange func(Transfer)
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Concurrency, 2)
	def(&o.PartConcurrency, 2)
	def(&o.RequestRetries, 5)
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur(&o.RetryBase, time.Second)
	defDur(&o.RetryMax, 5*time.Minute)
	defDur(&o.Poll, 2*time.Second)
	if o.StallTimeout == 0 {
		o.StallTimeout = time.Minute
	}
	if o.HTTPClient == nil {
		o.HTTPClient = newS3HTTPClient()
		if o.TLS != nil {
			o.HTTPClient.Transport.(*http.Transport).TLSClientConfig = o.TLS.Clone()
		}
	}
	return o
}

// Worker runs the transfer queue.
type Worker struct {
	db    *gorm.DB
	cloud Cloud
	opt   Options
	http  *http.Client
	lim   *limiter
	log   *slog.Logger
	kick  chan struct{}

	mu      sync.Mutex
	running map[int64]*atomic.Int64 // live bytes done of running transfers

	partsSent atomic.Int64
	bytesSent atomic.Int64
}

// New returns a worker of the queue in db (see Migrate) against cloud.
func New(db *gorm.DB, cloud Cloud, opt Options, log *slog.Logger) *Worker {
	opt = opt.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Worker{db: db, cloud: cloud, opt: opt, http: opt.HTTPClient, lim: newLimiter(opt.BytesPerSecond), log: log,
		kick: make(chan struct{}, 1), running: map[int64]*atomic.Int64{}}
}

// PartsSent counts the multipart parts this worker sent and S3 accepted.
func (w *Worker) PartsSent() int64 { return w.partsSent.Load() }

// BytesSent counts the bytes of uploads this worker sent and S3 accepted.
func (w *Worker) BytesSent() int64 { return w.bytesSent.Load() }

// Kick makes Run look at the queue now.
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Upload describes a file to send. SHA256 and Size may be left empty: the
// file is then hashed when queued.
type Upload struct {
	Path        string
	SHA256      string
	Size        int64
	ContentType string
}

// EnqueueUpload queues the upload of a local file. Queuing the same file
// (path and content) again returns the existing transfer; a failed one is
// queued again.
func (w *Worker) EnqueueUpload(ctx context.Context, u Upload) (Transfer, error) {
	path, err := filepath.Abs(u.Path)
	if err != nil {
		return Transfer{}, fmt.Errorf("transfer: %w", err)
	}
	// The real path is queued: openSource refuses one that later resolves
	// elsewhere.
	if path, err = filepath.EvalSymlinks(path); err != nil {
		return Transfer{}, fmt.Errorf("transfer: %w", err)
	}
	if u.SHA256 == "" {
		if u.SHA256, u.Size, err = HashFile(path); err != nil {
			return Transfer{}, err
		}
	} else if u.SHA256, err = filekey.ParseSHA256(u.SHA256); err != nil {
		return Transfer{}, fmt.Errorf("transfer: %w", err)
	}
	t, err := w.enqueue(ctx, Transfer{Direction: Up, SHA256: u.SHA256, Path: path, Size: u.Size, ContentType: u.ContentType})
	if err != nil {
		return t, err
	}
	// The upload is queued: a download left behind only costs bandwidth,
	// so failing to drop it does not fail the import.
	if err := w.dropRedundantDownloads(ctx, u.SHA256); err != nil && ctx.Err() == nil {
		w.log.Warn("redundant download of an uploaded file not dropped", "sha256", u.SHA256, "err", err)
	}
	return t, nil
}

// EnqueueFetch queues the download of a file records name that the clinic
// holds no copy of (FetchMissing's rule), and takes it back when an upload
// of the same file appears meanwhile: an image names its file a moment
// before the import queues its upload, and a sweep that reads in between
// must not download the clinic's own original back (the upload's queueing
// drops a download queued before it; this drops one queued after it).
func (w *Worker) EnqueueFetch(ctx context.Context, d Download) error {
	if _, err := w.EnqueueDownload(ctx, d); err != nil {
		return err
	}
	return w.dropRedundantDownloads(ctx, d.SHA256)
}

// dropRedundantDownloads removes the downloads of file sha that have not
// started while an upload of it (not failed) is queued or done: the clinic
// holds the bytes.
func (w *Worker) dropRedundantDownloads(ctx context.Context, sha string) error {
	err := w.db.WithContext(ctx).Exec(`DELETE FROM file_transfers WHERE direction = ? AND sha256 = ? AND state IN (?, ?) AND attempts = 0
		AND EXISTS (SELECT 1 FROM file_transfers u WHERE u.direction = ? AND u.sha256 = ? AND u.state <> ?)`,
		Down, sha, StateQueued, StateFailed, Up, sha, StateFailed).Error
	if err != nil {
		return fmt.Errorf("transfer: %w", err)
	}
	return nil
}

// Download describes a file to fetch into Path. Size may be 0 (then the
// cloud's is taken).
type Download struct {
	SHA256 string
	Size   int64
	Path   string
}

// EnqueueDownload queues the download of a cloud file to a local path.
func (w *Worker) EnqueueDownload(ctx context.Context, d Download) (Transfer, error) {
	path, err := filepath.Abs(d.Path)
	if err != nil {
		return Transfer{}, fmt.Errorf("transfer: %w", err)
	}
	sha, err := filekey.ParseSHA256(d.SHA256)
	if err != nil {
		return Transfer{}, fmt.Errorf("transfer: %w", err)
	}
	return w.enqueue(ctx, Transfer{Direction: Down, SHA256: sha, Path: path, Size: d.Size})
}

func (w *Worker) enqueue(ctx context.Context, t Transfer) (Transfer, error) {
	now := time.Now().UTC()
	t.State, t.NextAttemptAt = StateQueued, now
	db := w.db.WithContext(ctx)
	if err := db.Clauses(clause.OnConflict{DoNothing: true}).Create(&t).Error; err != nil {
		return t, fmt.Errorf("transfer: enqueue: %w", err)
	}
	var got Transfer
	if err := db.Where("direction = ? AND sha256 = ? AND path = ?", t.Direction, t.SHA256, t.Path).Take(&got).Error; err != nil {
		return got, fmt.Errorf("transfer: enqueue: %w", err)
	}
	if got.State == StateFailed {
		if err := w.Retry(ctx, got.ID); err != nil {
			return got, err
		}
		return w.Get(ctx, got.ID)
	}
	w.Kick()
	return got, nil
}

// Reconsider makes uploads held back (Options.Hold) ask again now: after
// something that may change the answer (a record names a file, the scope
// changed).
func (w *Worker) Reconsider(ctx context.Context) error {
	err := w.db.WithContext(ctx).Model(&Transfer{}).
		Where("direction = ? AND state = ? AND attempts = 0 AND reason <> ''", Up, StateQueued).
		Update("next_attempt_at", time.Now().UTC()).Error
	if err != nil {
		return fmt.Errorf("transfer: reconsider: %w", err)
	}
	w.Kick()
	return nil
}

// Recheck queues the finished or failed uploads of file sha again: the
// cloud's begin answers "present" when it still has the file (nothing is
// sent) and opens a new upload when it deleted it (a record synced again
// after its file was removed from S3). It returns how many it queued.
func (w *Worker) Recheck(ctx context.Context, sha string) (int64, error) {
	res := w.db.WithContext(ctx).Model(&Transfer{}).
		Where("direction = ? AND sha256 = ? AND state IN ?", Up, sha, []string{StatePresent, StateFailed}).
		Updates(map[string]any{"state": StateQueued, "attempts": 0, "next_attempt_at": time.Now().UTC(), "reason": ""})
	if res.Error != nil {
		return 0, fmt.Errorf("transfer: recheck: %w", res.Error)
	}
	if res.RowsAffected > 0 {
		w.Kick()
	}
	return res.RowsAffected, nil
}

// Redownload queues the download of sha into path again, also when an
// earlier download there finished (verify found the file gone from the
// clinic's disk).
func (w *Worker) Redownload(ctx context.Context, sha, path string, size int64) error {
	t, err := w.EnqueueDownload(ctx, Download{SHA256: sha, Size: size, Path: path})
	if err != nil {
		return err
	}
	if t.State != StatePresent {
		return nil
	}
	err = w.db.WithContext(ctx).Model(&Transfer{}).Where("id = ? AND state = ?", t.ID, StatePresent).
		Updates(map[string]any{"state": StateQueued, "attempts": 0, "next_attempt_at": time.Now().UTC(), "reason": "", "bytes_done": 0}).Error
	if err != nil {
		return fmt.Errorf("transfer: redownload: %w", err)
	}
	w.Kick()
	return nil
}

// Retry queues a failed transfer again.
func (w *Worker) Retry(ctx context.Context, id int64) error {
	res := w.db.WithContext(ctx).Model(&Transfer{}).Where("id = ? AND state = ?", id, StateFailed).
		Updates(map[string]any{"state": StateQueued, "attempts": 0, "next_attempt_at": time.Now().UTC(), "reason": ""})
	if res.Error != nil {
		return fmt.Errorf("transfer: retry: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return ErrNotFound
	}
	w.notify(ctx, id)
	w.Kick()
	return nil
}

// Get returns one transfer, with live progress when it runs.
func (w *Worker) Get(ctx context.Context, id int64) (Transfer, error) {
	var t Transfer
	err := w.db.WithContext(ctx).Take(&t, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return t, ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("transfer: get: %w", err)
	}
	w.live(&t)
	return t, nil
}

func (w *Worker) live(t *Transfer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p, ok := w.running[t.ID]; ok && (t.State == StateUploading || t.State == StateDownloading) {
		t.BytesDone = p.Load()
	}
}

// Filter selects transfers in List; zero fields match all.
type Filter struct {
	Direction, State, SHA256 string
	Limit                    int // default 100
	AfterID                  int64
}

// List returns transfers by id, with live progress for running ones.
func (w *Worker) List(ctx context.Context, f Filter) ([]Transfer, error) {
	q := w.db.WithContext(ctx).Order("id").Where("id > ?", f.AfterID)
	if f.Direction != "" {
		q = q.Where("direction = ?", f.Direction)
	}
	if f.State != "" {
		q = q.Where("state = ?", f.State)
	}
	if f.SHA256 != "" {
		q = q.Where("sha256 = ?", f.SHA256)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	var ts []Transfer
	if err := q.Limit(f.Limit).Find(&ts).Error; err != nil {
		return nil, fmt.Errorf("transfer: list: %w", err)
	}
	for i := range ts {
		w.live(&ts[i])
	}
	return ts, nil
}

// Counts are the number of transfers per state.
type Counts struct {
	Queued      int `json:"queued"`
	Uploading   int `json:"uploading"`
	Downloading int `json:"downloading"`
	Present     int `json:"present"`
	Failed      int `json:"failed"`
}

// Counts counts the transfers per state.
func (w *Worker) Counts(ctx context.Context) (Counts, error) {
	var rows []struct {
		State string
		N     int
	}
	if err := w.db.WithContext(ctx).Model(&Transfer{}).Select("state, count(*) AS n").Group("state").Scan(&rows).Error; err != nil {
		return Counts{}, fmt.Errorf("transfer: counts: %w", err)
	}
	var c Counts
	for _, r := range rows {
		switch r.State {
		case StateQueued:
			c.Queued = r.N
		case StateUploading:
			c.Uploading = r.N
		case StateDownloading:
			c.Downloading = r.N
		case StatePresent:
			c.Present = r.N
		case StateFailed:
			c.Failed = r.N
		}
	}
	return c, nil
}

// Run works the queue until ctx ends, then waits for the running transfers
// to stop (they are left queued, to resume on the next start) and returns
// nil. Transfers a previous process left running are resumed.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.db.WithContext(ctx).Model(&Transfer{}).Where("state IN ?", []string{StateUploading, StateDownloading}).
		Updates(map[string]any{"state": StateQueued, "next_attempt_at": time.Now().UTC()}).Error; err != nil {
		return fmt.Errorf("transfer: resume: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan struct{}, w.opt.Concurrency)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.kick:
		case <-done:
		case <-t.C:
		}
		w.mu.Lock()
		free := w.opt.Concurrency - len(w.running)
		busy := make([]int64, 0, len(w.running))
		for id := range w.running {
			busy = append(busy, id)
		}
		w.mu.Unlock()
		if free > 0 {
			var due []Transfer
			q := w.db.WithContext(ctx).Where("state = ? AND next_attempt_at <= ?", StateQueued, time.Now().UTC())
			if len(busy) > 0 {
				q = q.Where("id NOT IN ?", busy)
			}
			if err := q.Order("next_attempt_at, id").Limit(free).Find(&due).Error; err != nil && ctx.Err() == nil {
				w.log.Warn("transfer queue read failed", "err", err)
			}
			for _, tr := range due {
				if w.held(ctx, tr) {
					continue
				}
				live, ok := w.claim(tr.ID)
				if !ok {
					continue
				}
				wg.Go(func() {
					defer func() {
						select { // wake the loop; never block after it returned
						case done <- struct{}{}:
						default:
						}
					}()
					if err := w.process(ctx, tr.ID, live); err != nil && ctx.Err() == nil {
						w.log.Debug("transfer attempt failed", "id", tr.ID, "err", err)
					}
				})
			}
		}
		t.Reset(w.opt.Poll)
	}
}

// held asks Options.Hold about an upload and, when it must wait, puts it
// back in the queue for later with the reason.
func (w *Worker) held(ctx context.Context, tr Transfer) bool {
	if w.opt.Hold == nil || tr.Direction != Up {
		return false
	}
	wait, reason, err := w.opt.Hold(ctx, tr)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("transfer hold check failed; will ask again", "id", tr.ID, "err", err)
		}
		wait, reason = 10*time.Second, tr.Reason
	}
	if wait <= 0 {
		if tr.Reason != "" && tr.Attempts == 0 {
			// It waited; it goes now: clear the waiting note.
			_ = w.db.WithContext(ctx).Model(&Transfer{}).Where("id = ? AND state = ?", tr.ID, StateQueued).Update("reason", "").Error
		}
		return false
	}
	err = w.db.WithContext(ctx).Model(&Transfer{}).Where("id = ? AND state = ?", tr.ID, StateQueued).
		Updates(map[string]any{"next_attempt_at": time.Now().UTC().Add(wait), "reason": reason}).Error
	if err != nil && ctx.Err() == nil {
		w.log.Warn("transfer hold failed", "id", tr.ID, "err", err)
	}
	return true
}

// claim marks id running; false when it already is.
func (w *Worker) claim(id int64) (*atomic.Int64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.running[id]; ok {
		return nil, false
	}
	p := &atomic.Int64{}
	w.running[id] = p
	return p, true
}

func (w *Worker) release(id int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.running, id)
}

// Process runs one attempt of transfer id now (whatever its state or next
// attempt time) and returns its error. Run uses the same path.
func (w *Worker) Process(ctx context.Context, id int64) error {
	live, ok := w.claim(id)
	if !ok {
		return ErrBusy
	}
	return w.process(ctx, id, live)
}

func (w *Worker) process(ctx context.Context, id int64, live *atomic.Int64) error {
	defer w.release(id)
	t, err := w.Get(ctx, id)
	if err != nil || t.State == StatePresent {
		return err
	}
	state := StateUploading
	if t.Direction == Down {
		state = StateDownloading
	}
	live.Store(t.BytesDone)
	if err := w.setState(ctx, &t, state, map[string]any{}); err != nil {
		return err
	}
	if t.Direction == Up {
		err = w.upload(ctx, &t, live)
	} else {
		err = w.download(ctx, &t, live)
	}
	// Record the outcome even when ctx ended (shutdown): use a context
	// that outlives it briefly.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	switch {
	case err == nil:
		now := time.Now().UTC()
		if serr := w.setState(rctx, &t, StatePresent, map[string]any{"bytes_done": t.Size, "size": t.Size, "reason": "",
			"done_at": &now, "upload_id": ""}); serr != nil {
			return serr
		}
		w.db.WithContext(rctx).Where("transfer_id = ?", t.ID).Delete(&Part{})
		w.log.Info("file transferred", "direction", t.Direction, "sha256", t.SHA256, "size", t.Size)
		return nil
	case ctx.Err() != nil:
		// Shutdown: not an attempt that failed; resume on the next start.
		_ = w.setState(rctx, &t, StateQueued, map[string]any{"bytes_done": live.Load(), "next_attempt_at": time.Now().UTC()})
		return err
	case isPermanent(err) || (w.opt.MaxAttempts > 0 && t.Attempts+1 >= w.opt.MaxAttempts):
		w.log.Warn("file transfer failed", "direction", t.Direction, "sha256", t.SHA256, "err", err)
		_ = w.setState(rctx, &t, StateFailed, map[string]any{"attempts": t.Attempts + 1, "reason": err.Error(), "bytes_done": live.Load()})
		return err
	default:
		next := time.Now().UTC().Add(backoff(w.opt.RetryBase, w.opt.RetryMax, t.Attempts+1))
		_ = w.setState(rctx, &t, StateQueued, map[string]any{"attempts": t.Attempts + 1, "reason": err.Error(),
			"next_attempt_at": next, "bytes_done": live.Load()})
		return err
	}
}

// setState writes state and the other columns of set, updates t and calls
// OnChange.
func (w *Worker) setState(ctx context.Context, t *Transfer, state string, set map[string]any) error {
	set["state"] = state
	if err := w.db.WithContext(ctx).Model(&Transfer{}).Where("id = ?", t.ID).Updates(set).Error; err != nil {
		return fmt.Errorf("transfer: set state: %w", err)
	}
	w.notify(ctx, t.ID)
	return w.db.WithContext(ctx).Take(t, t.ID).Error
}

func (w *Worker) notify(ctx context.Context, id int64) {
	if w.opt.OnChange == nil {
		return
	}
	if t, err := w.Get(ctx, id); err == nil {
		w.opt.OnChange(t)
	}
}

// saveProgress persists bytes done (best effort: it is only for display
// after a restart; parts and the .part file are the truth).
func (w *Worker) saveProgress(ctx context.Context, id, done int64) {
	w.db.WithContext(ctx).Model(&Transfer{}).Where("id = ?", id).Update("bytes_done", done)
}

// openSource opens the file of an upload and checks it is still the one
// that was queued (same size; the SHA-256 is checked by S3 and the cloud).
func openSource(t *Transfer) (*os.File, error) {
	// An imported file's path was queued with its symbolic links resolved
	// (internal/importdir); one appearing on it since (a directory swapped
	// for a link) could redirect the read outside the import directories.
	if real, err := filepath.EvalSymlinks(t.Path); err != nil || real != t.Path {
		return nil, permanent(fmt.Errorf("%w: path no longer resolves to itself", ErrLocalChanged))
	}
	f, err := os.Open(t.Path)
	if err != nil {
		return nil, permanent(fmt.Errorf("transfer: open source: %w", err))
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, permanent(fmt.Errorf("transfer: stat source: %w", err))
	}
	if fi.Size() != t.Size {
		_ = f.Close()
		return nil, permanent(fmt.Errorf("%w: size %d, queued with %d", ErrLocalChanged, fi.Size(), t.Size))
	}
	return f, nil
}
