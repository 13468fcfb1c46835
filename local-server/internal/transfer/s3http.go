package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scsync/scsync/shared/filekey"
)

// errStalled: no byte moved for Options.StallTimeout; the request was cut.
var errStalled = errors.New("transfer: transfer stalled")

// newS3HTTPClient is the client for presigned requests: no overall timeout
// (a part or a download takes as long as the line needs; stalls are caught
// by the watchdog), bounded dial/TLS/response-header waits.
func newS3HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
	}}
}

// limiter caps bytes per second across all transfers of a worker.
//
// It books bytes on a virtual clock (next: when the bytes booked so far may
// all have gone out). The clock may lag the real one by up to burst, so
// time the line sat idle (between parts: a part-URL request, a commit; a
// sleep that overslept on a busy machine) is made up afterwards instead of
// lost: without it every gap came off the cap, and a clinic capped at
// 100 Mbit/s used less of it than it allows. The average over any window
// longer than burst stays at or below the rate.
type limiter struct {
	mu    sync.Mutex
	rate  float64       // bytes per second
	chunk int           // largest read passed through at once
	burst time.Duration // how far the virtual clock may lag the real one
	next  time.Time
}

// limiterBurst is the idle time the limiter makes up: 250 ms, i.e. 3 MiB at
// 100 Mbit/s.
const limiterBurst = 250 * time.Millisecond

func newLimiter(bps int64) *limiter {
	if bps <= 0 {
		return nil
	}
	return &limiter{rate: float64(bps), chunk: int(max(bps/20, 16<<10)), burst: limiterBurst}
}

// wait books n bytes and sleeps until they are within the rate.
func (l *limiter) wait(ctx context.Context, n int) error {
	l.mu.Lock()
	now := time.Now()
	if floor := now.Add(-l.burst); l.next.Before(floor) {
		l.next = floor
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	d := l.next.Sub(now)
	l.mu.Unlock()
	return sleep(ctx, d)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// meter passes bytes through, counting them (for progress and the stall
// watchdog) and keeping to the rate limit.
type meter struct {
	ctx   context.Context
	r     io.Reader
	lim   *limiter
	last  *atomic.Int64 // unix nanos of the last byte
	live  *atomic.Int64 // the transfer's live byte count
	count int64         // bytes through this meter
}

func (m *meter) Read(p []byte) (int, error) {
	if m.lim != nil && len(p) > m.lim.chunk {
		p = p[:m.lim.chunk]
	}
	n, err := m.r.Read(p)
	if n > 0 {
		m.last.Store(time.Now().UnixNano())
		m.live.Add(int64(n))
		m.count += int64(n)
		if m.lim != nil {
			if werr := m.lim.wait(m.ctx, n); werr != nil {
				return n, werr
			}
		}
	}
	return n, err
}

func (m *meter) Write(p []byte) (int, error) { // downloads
	n := len(p)
	m.last.Store(time.Now().UnixNano())
	m.live.Add(int64(n))
	m.count += int64(n)
	if m.lim != nil {
		if err := m.lim.wait(m.ctx, n); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// watch returns a context that is cancelled with errStalled when last is
// not advanced for the stall timeout; stop ends the watch.
func (w *Worker) watch(ctx context.Context, last *atomic.Int64) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	last.Store(time.Now().UnixNano())
	stall := w.opt.StallTimeout
	if stall <= 0 {
		return ctx, func() { cancel(nil) }
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(max(stall/4, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if time.Since(time.Unix(0, last.Load())) > stall {
					cancel(errStalled)
					return
				}
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// put sends bytes [off, off+n) of f with the presigned request p and
// returns the ETag. The body streams from disk: nothing is buffered beyond
// the transport's write buffer. The transfer's live progress counts the
// bytes; on failure they are taken back.
func (w *Worker) put(ctx context.Context, p filekey.Presigned, f *os.File, off, n int64, live *atomic.Int64) (string, error) {
	var last atomic.Int64
	ctx, stop := w.watch(ctx, &last)
	defer stop()
	m := &meter{ctx: ctx, r: io.NewSectionReader(f, off, n), lim: w.lim, last: &last, live: live}
	req, err := http.NewRequestWithContext(ctx, p.Method, p.URL, m)
	if err != nil {
		return "", permanent(err)
	}
	req.ContentLength = n
	if n == 0 {
		req.Body = http.NoBody
	}
	p.Request(req.Header)
	resp, err := w.http.Do(req)
	if err != nil {
		live.Add(-m.count)
		if errors.Is(context.Cause(ctx), errStalled) {
			return "", fmt.Errorf("%w: %w", errStalled, redact(err))
		}
		return "", fmt.Errorf("transfer: %s part: %w", p.Method, redact(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		live.Add(-m.count)
		return "", s3Error(resp)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if m.count != n {
		live.Add(-m.count)
		return "", fmt.Errorf("transfer: sent %d of %d bytes", m.count, n)
	}
	return resp.Header.Get("ETag"), nil
}

// redact drops the query of a presigned URL (its signature) from err: a
// signed URL is a credential for minutes and must not reach logs or a
// transfer's reason.
func redact(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	u, _, _ := strings.Cut(ue.URL, "?")
	return &url.Error{Op: ue.Op, URL: u, Err: ue.Err}
}

// s3Error reads S3's XML error code.
func s3Error(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	e := &S3Error{Status: resp.StatusCode}
	if i, j := bytes.Index(b, []byte("<Code>")), bytes.Index(b, []byte("</Code>")); i >= 0 && j > i {
		e.Code = string(b[i+len("<Code>") : j])
	}
	return e
}

// s3Status is the status of an S3 error answer (0 for other errors).
func s3Status(err error) int {
	var e *S3Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// retryable reports whether one more try of a request may succeed: the
// connection broke or stalled, S3 is busy or failing, or the URL was
// refused (403: expired; the caller fetches a fresh one).
func retryable(err error) bool {
	if err == nil || isPermanent(err) {
		return false
	}
	if st := s3Status(err); st != 0 {
		return st == http.StatusForbidden || st == http.StatusRequestTimeout || st == http.StatusTooManyRequests || st >= 500
	}
	if ce := (*CloudError)(nil); errors.As(err, &ce) {
		return ce.Status >= 500 || ce.Status == http.StatusTooManyRequests || ce.Status == http.StatusRequestTimeout
	}
	return true // network errors, stalls
}

// retry runs fn until it succeeds, fails for good (not retryable), the
// context ends, or Options.RequestRetries tries are used up; it waits with
// exponential backoff between tries.
func (w *Worker) retry(ctx context.Context, fn func(try int) error) error {
	for try := 0; ; try++ {
		err := fn(try)
		if err == nil || !retryable(err) || ctx.Err() != nil || try+1 >= w.opt.RequestRetries {
			return err
		}
		if serr := sleep(ctx, backoff(w.opt.RetryBase, w.opt.RetryMax, try+1)); serr != nil {
			return err
		}
	}
}

// backoff is base·2^(n-1), at most limit, with ±20 % jitter.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
