package suite

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// wsEvent is the part of a live event the benchmarks read.
type wsEvent struct {
	Seq     int64     `json:"seq"`
	Type    string    `json:"type"`
	Kind    string    `json:"kind"`
	Record  string    `json:"record"`
	Session string    `json:"session"`
	At      time.Time `json:"at"`
	// Sent is set by the bare fan-out only.
	Sent time.Time `json:"sent"`
}

// wsViewer is one connected viewer. Like the viewer page, it reconnects
// when the server drops it and resumes with since=<last seq>, so it misses
// nothing the hub still buffers; Reconnects counts those drops.
type wsViewer struct {
	url        string
	fn         func(e wsEvent, at time.Time)
	mu         sync.Mutex
	conn       *websocket.Conn
	lastSeq    int64
	Reconnects atomic.Int64
	cancel     context.CancelFunc
	done       chan error
}

// dialViewer connects to url (http:// or https://, turned into ws://) and
// calls fn with every event and the time it was read, until Close.
func dialViewer(ctx context.Context, url string, fn func(e wsEvent, at time.Time)) (*wsViewer, error) {
	ctx, cancel := context.WithCancel(ctx)
	v := &wsViewer{url: "ws" + strings.TrimPrefix(url, "http"), fn: fn, cancel: cancel, done: make(chan error, 1)}
	conn, err := v.dial(ctx, "")
	if err != nil {
		cancel()
		return nil, err
	}
	go v.run(ctx, conn)
	return v, nil
}

func (v *wsViewer) dial(ctx context.Context, since string) (*websocket.Conn, error) {
	url := v.url
	if since != "" {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		url += sep + "since=" + since
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPClient: http.DefaultClient})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	v.mu.Lock()
	v.conn = conn
	v.mu.Unlock()
	return conn, nil
}

func (v *wsViewer) run(ctx context.Context, conn *websocket.Conn) {
	for {
		_, b, err := conn.Read(ctx)
		at := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				v.done <- nil
				return
			}
			// Dropped (too slow, or cut): reconnect and resume.
			v.Reconnects.Add(1)
			_ = conn.CloseNow()
			if conn, err = v.dial(ctx, strconv.FormatInt(v.lastSeq, 10)); err != nil {
				v.done <- err
				return
			}
			continue
		}
		var e wsEvent
		if json.Unmarshal(b, &e) == nil {
			if e.Seq > 0 {
				v.lastSeq = e.Seq
			}
			v.fn(e, at)
		}
	}
}

// Close ends the connection.
func (v *wsViewer) Close() {
	v.mu.Lock()
	conn := v.conn
	v.mu.Unlock()
	v.cancel()
	_ = conn.Close(websocket.StatusNormalClosure, "")
	select {
	case err := <-v.done:
		v.done <- err
	case <-time.After(2 * time.Second):
		_ = conn.CloseNow()
	}
}

// Err is the read loop's error once it has ended for good, nil while it
// runs.
func (v *wsViewer) Err() error {
	select {
	case err := <-v.done:
		v.done <- err
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	default:
		return nil
	}
}
