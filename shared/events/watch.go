package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// Watch tuning.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 10 * time.Second
	// watchStable is how long a connection must last for the next reconnect
	// to start again from the smallest backoff.
	watchStable = 10 * time.Second
	// watchPing is how often Watch checks the server still answers, so a
	// silently dead connection is noticed.
	watchPing = 30 * time.Second
	// watchReadLimit bounds one message.
	watchReadLimit = 1 << 20
)

// Watch connects to the events WebSocket at rawURL (ws://, wss://, http://
// or https://, e.g. "http://127.0.0.1:8080/v1/events") with token as a
// bearer token, and calls fn with every event, in order, until ctx is done;
// then it returns nil. since is the seq to resume after (0: start live,
// after a reset). When the connection drops, Watch reconnects with backoff
// and resumes from the last seq it saw; if the server cannot resume, fn gets
// a reset event first. fn runs on Watch's goroutine and should not block
// for long. Watch returns an error wrapping ErrRejected (a *RejectedError)
// when the server refuses the handshake for good (401, 403, 404…), and an
// error for a URL that does not parse.
func Watch(ctx context.Context, rawURL, token string, since int64, fn func(Event)) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("events: watch url: %w", err)
	}
	attempt := 0
	for {
		start := time.Now()
		err := watchOnce(ctx, u, token, &since, fn)
		if errors.Is(err, ErrRejected) {
			return err
		}
		if ctx.Err() != nil {
			return nil //nolint:nilerr // the connection's error is moot once ctx ended
		}
		if time.Since(start) >= watchStable {
			attempt = 0
		}
		// Full jitter, so many clients of a restarted server spread out.
		ceil := min(watchBackoffMin<<min(attempt, 16), watchBackoffMax)
		delay := time.Duration(rand.Int64N(int64(ceil) + 1))
		attempt++
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// watchOnce runs one connection, updating *since as events arrive.
func watchOnce(ctx context.Context, base *url.URL, token string, since *int64, fn func(Event)) error {
	u := *base
	q := u.Query()
	if *since > 0 {
		q.Set("since", strconv.FormatInt(*since, 10))
	}
	u.RawQuery = q.Encode()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPHeader: h})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if resp != nil && permanent(resp.StatusCode) {
			return &RejectedError{Status: resp.StatusCode}
		}
		return err
	}
	conn.SetReadLimit(watchReadLimit)
	pinging := make(chan struct{})
	go func() {
		defer close(pinging)
		pingLoop(ctx, cancel, conn)
	}()
	defer func() {
		_ = conn.CloseNow()
		cancel()
		<-pinging
	}()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		var e Event
		if err := json.Unmarshal(data, &e); err != nil {
			continue // not an event; nothing a reconnect would fix
		}
		// After a reset come the open sessions' editing events, numbered
		// before it: resume from the reset's position, not theirs.
		if e.Type == TypeReset || e.Seq > *since {
			*since = e.Seq
		}
		fn(e)
	}
}

// pingLoop cancels the connection when the server stops answering pings.
func pingLoop(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn) {
	t := time.NewTicker(watchPing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, watchPing)
		err := conn.Ping(pctx)
		pcancel()
		if err != nil {
			cancel()
			return
		}
	}
}

// permanent reports whether a refused handshake will be refused again.
func permanent(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return status >= 400 && status < 500
}
