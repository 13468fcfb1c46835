package suite

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// wsEvent is the part of a live event the benchmarks read.
type wsEvent struct {
	Type    string    `json:"type"`
	Kind    string    `json:"kind"`
	Record  string    `json:"record"`
	Session string    `json:"session"`
	At      time.Time `json:"at"`
	// Sent is set by the bare fan-out only.
	Sent time.Time `json:"sent"`
}

// wsViewer is one connected viewer; fn is called with every event and the
// time it was read.
type wsViewer struct {
	conn *websocket.Conn
	done chan error
}

// dialViewer connects to url (http:// or https://, turned into ws://) and
// reads events until ctx ends or the connection fails.
func dialViewer(ctx context.Context, url string, fn func(e wsEvent, at time.Time)) (*wsViewer, error) {
	url = "ws" + strings.TrimPrefix(url, "http")
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
	v := &wsViewer{conn: conn, done: make(chan error, 1)}
	go func() {
		for {
			_, b, err := conn.Read(ctx)
			at := time.Now()
			if err != nil {
				v.done <- err
				return
			}
			var e wsEvent
			if json.Unmarshal(b, &e) == nil {
				fn(e, at)
			}
		}
	}()
	return v, nil
}

// Close ends the connection.
func (v *wsViewer) Close() {
	_ = v.conn.Close(websocket.StatusNormalClosure, "")
	select {
	case <-v.done:
	case <-time.After(2 * time.Second):
		_ = v.conn.CloseNow()
	}
}

// Err is the read loop's error once it has ended, nil while it runs.
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
