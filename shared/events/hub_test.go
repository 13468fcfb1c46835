package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
	"github.com/scsync/scsync/shared/version"
)

const (
	clinicA ids.ID = 1001
	clinicB ids.ID = 2002
)

// hubServer is a Hub behind an httptest server whose /events endpoint takes
// the clinic from the clinic query parameter (a real server takes it from
// the credentials).
type hubServer struct {
	*Hub
	srv *httptest.Server
}

func startHub(t *testing.T, cfg HubConfig) *hubServer {
	t.Helper()
	h := NewHub(cfg, nil)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		c, err := ids.Parse(r.URL.Query().Get("clinic"))
		if err != nil {
			http.Error(w, "clinic", http.StatusBadRequest)
			return
		}
		h.ServeWS(w, r, c)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return &hubServer{Hub: h, srv: srv}
}

// url is the events URL for clinic; since < 0 leaves since out.
func (hs *hubServer) url(clinic ids.ID, since int64) string {
	u := "ws" + strings.TrimPrefix(hs.srv.URL, "http") + "/events?clinic=" + clinic.String()
	if since >= 0 {
		u += "&since=" + strconv.FormatInt(since, 10)
	}
	return u
}

func (hs *hubServer) dial(t *testing.T, clinic ids.ID, since int64) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, hs.url(clinic, since), nil)
	if err != nil {
		t.Fatalf("Dial(%s) error = %v", hs.url(clinic, since), err)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = conn.CloseNow() })
	return conn
}

// clients is the number of connected clients.
func (h *Hub) clientCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// kickAll drops every client as if it had fallen behind.
func (h *Hub) kickAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.clients {
		h.dropLocked(s, errTooSlow)
	}
}

func read(t *testing.T, conn *websocket.Conn) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, data, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("Read() error = %v", err)
	}
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("Read() = %q, not an event: %v", data, err)
	}
	return e
}

func readReset(t *testing.T, conn *websocket.Conn) Event {
	t.Helper()
	e := read(t, conn)
	if e.Type != TypeReset {
		t.Fatalf("first event = %+v, want a reset", e)
	}
	return e
}

func ev(clinic ids.ID, n int) Event {
	return Event{Type: TypeSaved, Clinic: clinic, Kind: "patient", Record: ids.ID(n), Side: SideCloud, User: "dr.kim", Version: version.V{A: 2, B: uint32(n)}}
}

func TestHubFanOutAndClinicFilter(t *testing.T) {
	t.Parallel()
	hs := startHub(t, HubConfig{})
	var as []*websocket.Conn
	for range 3 {
		as = append(as, hs.dial(t, clinicA, -1))
	}
	b := hs.dial(t, clinicB, -1)
	start := readReset(t, b).Seq
	for _, c := range as {
		if got := readReset(t, c).Seq; got != start {
			t.Fatalf("reset seq = %d, want %d (nothing published yet)", got, start)
		}
	}
	const n = 60
	for i := 1; i <= n; i++ {
		hs.Publish(ev(clinicA, i))
		if i%3 == 0 {
			hs.Publish(ev(clinicB, i))
		}
	}
	hs.Publish(ev(clinicB, 999)) // marker: B's last

	for ci, c := range as {
		prev := start
		for i := 1; i <= n; i++ {
			e := read(t, c)
			if e.Clinic != clinicA || e.Record != ids.ID(i) || e.Seq <= prev {
				t.Fatalf("client %d event %d = %+v, want clinic %d record %d after seq %d", ci, i, e, clinicA, i, prev)
			}
			if e.Version != (version.V{A: 2, B: uint32(i)}) || e.User != "dr.kim" || e.At.IsZero() {
				t.Fatalf("client %d event %d = %+v, fields lost", ci, i, e)
			}
			prev = e.Seq
		}
	}
	for i := 3; i <= n; i += 3 {
		if e := read(t, b); e.Clinic != clinicB || e.Record != ids.ID(i) {
			t.Fatalf("clinic B client got %+v, want clinic B record %d", e, i)
		}
	}
	if e := read(t, b); e.Record != 999 {
		t.Fatalf("clinic B client got %+v, want the marker", e)
	}
	// A's clients see B's marker never: their next event is A's next.
	hs.Publish(ev(clinicA, n+1))
	for ci, c := range as {
		if e := read(t, c); e.Clinic != clinicA || e.Record != n+1 {
			t.Fatalf("client %d got %+v, want clinic A record %d", ci, e, n+1)
		}
	}
}

func TestHubResume(t *testing.T) {
	t.Parallel()
	hs := startHub(t, HubConfig{Buffer: 64})
	c := hs.dial(t, clinicA, -1)
	readReset(t, c)
	for i := 1; i <= 5; i++ {
		hs.Publish(ev(clinicA, i))
	}
	read(t, c)
	last := read(t, c) // record 2
	_ = c.CloseNow()
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := hs.clientCount(); n != 0 {
			return fmt.Errorf("%d clients connected", n)
		}
		return nil
	})
	for i := 6; i <= 10; i++ {
		hs.Publish(ev(clinicB, 100+i)) // other clinic, interleaved
		hs.Publish(ev(clinicA, i))
	}

	c = hs.dial(t, clinicA, last.Seq)
	prev := last.Seq
	for i := 3; i <= 11; i++ {
		if i == 11 {
			hs.Publish(ev(clinicA, 11)) // live after the replay
		}
		e := read(t, c)
		if e.Type != TypeSaved || e.Record != ids.ID(i) || e.Clinic != clinicA || e.Seq <= prev {
			t.Fatalf("after resume got %+v, want clinic A record %d after seq %d", e, i, prev)
		}
		prev = e.Seq
	}
}

func TestHubReset(t *testing.T) {
	t.Parallel()
	hs := startHub(t, HubConfig{Buffer: 8})
	var seqs []int64
	c := hs.dial(t, clinicA, -1)
	first := readReset(t, c).Seq
	for i := 1; i <= 20; i++ {
		hs.Publish(ev(clinicA, i))
		seqs = append(seqs, read(t, c).Seq)
	}
	last := seqs[len(seqs)-1]
	tests := []struct {
		name  string
		since int64
		reset bool
	}{
		{"no since", -1, true},
		{"zero", 0, true},
		{"before the hub started", first - 1, true},
		{"evicted", seqs[10], true},
		{"from the future (another hub)", last + 1, true},
		{"oldest kept minus one", seqs[11], false},
		{"newest", last, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := hs.dial(t, clinicA, tt.since)
			if tt.since == last {
				// Nothing to replay; the next event is live. (Last case:
				// it moves the hub on.)
				hs.Publish(ev(clinicA, 21))
			}
			e := read(t, c)
			if tt.reset {
				if e.Type != TypeReset || e.Seq != last || e.Clinic != clinicA {
					t.Fatalf("since=%d: first event = %+v, want reset at seq %d", tt.since, e, last)
				}
				return
			}
			if e.Type != TypeSaved || e.Seq != tt.since+1 {
				t.Fatalf("since=%d: first event = %+v, want seq %d", tt.since, e, tt.since+1)
			}
		})
		if t.Failed() {
			return
		}
	}
}

func TestHubResumeNewestThenLive(t *testing.T) {
	t.Parallel()
	hs := startHub(t, HubConfig{})
	c := hs.dial(t, clinicA, -1)
	r := readReset(t, c)
	c2 := hs.dial(t, clinicA, r.Seq) // resumable: nothing missed
	hs.Publish(ev(clinicA, 1))
	if e := read(t, c2); e.Type != TypeSaved || e.Seq != r.Seq+1 {
		t.Fatalf("resumed at the newest seq: got %+v, want the live event seq %d", e, r.Seq+1)
	}
}

func TestHubBadRequests(t *testing.T) {
	t.Parallel()
	hs := startHub(t, HubConfig{OriginPatterns: []string{"viewer.example.com"}})
	tests := []struct {
		name   string
		query  string
		origin string
		want   int
	}{
		{"bad since", "&since=abc", "", http.StatusBadRequest},
		{"negative since", "&since=-4", "", http.StatusBadRequest},
		{"foreign origin", "", "https://evil.example.org", http.StatusForbidden},
		{"configured origin", "", "https://viewer.example.com", http.StatusSwitchingProtocols},
		{"same origin", "", "SAME", http.StatusSwitchingProtocols},
		{"no origin (not a browser)", "", "", http.StatusSwitchingProtocols},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			origin := tt.origin
			if origin == "SAME" {
				origin = hs.srv.URL
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			conn, resp, err := websocket.Dial(ctx, hs.url(clinicA, -1)+tt.query, &websocket.DialOptions{HTTPHeader: h})
			if conn != nil {
				_ = conn.CloseNow()
			}
			if resp == nil {
				t.Fatalf("Dial() response = nil, err = %v", err)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("Dial() status = %d (err %v), want %d", resp.StatusCode, err, tt.want)
			}
			if tt.want == http.StatusBadRequest {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("error Content-Type = %q, want application/json", ct)
				}
			}
		})
	}
}

func TestHubSlowClientDropped(t *testing.T) {
	t.Parallel()
	// Batches of 100 fit a client's queue, so clients that keep up between
	// batches are never dropped.
	hs := startHub(t, HubConfig{ClientQueue: 256, WriteTimeout: time.Minute})
	slow := hs.dial(t, clinicA, -1) // never reads until dropped

	type fast struct {
		got  atomic.Int64
		last atomic.Int64
		err  atomic.Value
	}
	var fasts [2]fast
	var wg sync.WaitGroup
	for i := range fasts {
		f := &fasts[i]
		c := hs.dial(t, clinicA, -1)
		start := readReset(t, c).Seq
		f.last.Store(start)
		wg.Go(func() {
			for {
				_, data, err := c.Read(context.Background())
				if err != nil {
					if websocket.CloseStatus(err) != websocket.StatusGoingAway {
						f.err.Store(fmt.Sprintf("disconnected: %v", err))
					}
					return
				}
				var e Event
				if err := json.Unmarshal(data, &e); err != nil || e.Seq != f.last.Load()+1 {
					f.err.Store(fmt.Sprintf("got %s after seq %d: a gap or a duplicate", data, f.last.Load()))
					return
				}
				f.last.Store(e.Seq)
				f.got.Add(1)
			}
		})
	}
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := hs.clientCount(); n != 3 {
			return fmt.Errorf("%d clients, want 3", n)
		}
		return nil
	})

	big := ev(clinicA, 1)
	big.Reason = strings.Repeat("x", 4096) // fills the slow client's socket sooner
	published := int64(0)
	for batch := 0; hs.clientCount() == 3; batch++ {
		if batch == 1000 {
			t.Fatalf("slow client still connected after %d events", published)
		}
		start := time.Now()
		for range 100 {
			hs.Publish(big)
			published++
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("publishing 100 events took %s: a slow client blocks Publish", d)
		}
		testenv.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			for i := range fasts {
				if e := fasts[i].err.Load(); e != nil {
					t.Fatalf("fast client %d: %v", i, e)
				}
				if got := fasts[i].got.Load(); got != published {
					return fmt.Errorf("fast client %d has %d of %d events", i, got, published)
				}
			}
			return nil
		})
	}
	// The slow client reads what reached it, then finds the connection closed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, _, err := slow.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("slow client connection not closed: %v", err)
			}
			break
		}
	}
	if n := hs.clientCount(); n != 2 {
		t.Fatalf("%d clients after the drop, want the 2 fast ones", n)
	}
	hs.Publish(ev(clinicA, 2))
	published++
	testenv.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		for i := range fasts {
			if got := fasts[i].got.Load(); got != published {
				return fmt.Errorf("fast client %d has %d of %d events", i, got, published)
			}
		}
		return nil
	})
	hs.Close()
	wg.Wait()
}

// TestHubCloseNoLeak: Close disconnects every client with 1001 and every
// goroutine of the hub and its connections ends. Not parallel: it counts
// goroutines.
func TestHubCloseNoLeak(t *testing.T) {
	checkNoLeak(t)
	// Pings well apart: a pong late by more than the interval drops its
	// client with a cut connection instead of the 1001 this test expects
	// (seen at 20 ms on a loaded machine). The keepalive goroutines run
	// all the same, and must end with Close.
	h := NewHub(HubConfig{PingInterval: 2 * time.Second}, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeWS(w, r, clinicA)
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	var conns []*websocket.Conn
	for range 5 {
		conn, _, err := websocket.Dial(context.Background(), url, nil)
		if err != nil {
			t.Fatalf("Dial() error = %v", err)
		}
		conns = append(conns, conn)
	}
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func() {
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 10 {
		h.Publish(ev(clinicA, i))
	}
	done := make(chan struct{})
	go func() {
		h.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Close() did not return within 15s")
	}
	for range conns {
		if err := <-errs; websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("client read error = %v, want close status 1001", err)
		}
	}
	resp, err := http.Get(srv.URL + "?since=1")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("ServeWS after Close status = %d, want 503", resp.StatusCode)
	}
	h.Publish(ev(clinicA, 99)) // after Close: ignored, no panic
	for _, c := range conns {
		_ = c.CloseNow()
	}
	srv.Close()
	checkNoLeak(t)
}

// checkNoLeak waits until no goroutine of this package's hub, its clients or
// the WebSocket library is left.
func checkNoLeak(t *testing.T) {
	t.Helper()
	markers := []string{"coder/websocket", "events.(*Hub)", "events.watchOnce", "events.pingLoop", "events.Watch"}
	testenv.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, m := range markers {
				if strings.Contains(g, m) {
					return errors.New("goroutine left:\n" + g)
				}
			}
		}
		return nil
	})
}

func TestHubPingDropsDeadClient(t *testing.T) {
	t.Parallel()
	hs := startHub(t, HubConfig{PingInterval: 20 * time.Millisecond})
	// A coder/websocket client answers pings only while it reads: this one
	// never does, like a peer that vanished without closing.
	hs.dial(t, clinicA, -1)
	testenv.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := hs.clientCount(); n != 0 {
			return fmt.Errorf("%d clients connected, want the silent one dropped", n)
		}
		return nil
	})
}

func TestRequestToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, header, query, want string
	}{
		{"bearer header", "Bearer abc", "", "abc"},
		{"lowercase scheme", "bearer abc", "", "abc"},
		{"query", "", "access_token=q1", "q1"},
		{"header wins", "Bearer h", "access_token=q", "h"},
		{"other scheme", "Basic dXNlcg==", "access_token=q", ""},
		{"none", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/events?"+tt.query, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if got := RequestToken(r); got != tt.want {
				t.Errorf("RequestToken(%q, %q) = %q, want %q", tt.header, tt.query, got, tt.want)
			}
		})
	}
}

// TestHubEditingOnConnect: a client connecting without a position is sent,
// after its reset, the editing event of every open session of its clinic
// (not another clinic's, not a closed one), so "Editing by …" shows on load.
func TestHubEditingOnConnect(t *testing.T) {
	t.Parallel()
	hs := startHub(t, HubConfig{})
	editing := func(clinic ids.ID, rec int, session string) Event {
		return Event{Type: TypeEditing, Clinic: clinic, Kind: "patient", Record: ids.ID(rec), Side: SideCloud, User: "dr.kim", Session: session}
	}
	hs.Publish(editing(clinicA, 1, "s1"))
	hs.Publish(editing(clinicA, 2, "s2"))
	hs.Publish(editing(clinicB, 3, "s3"))
	hs.Publish(Event{Type: TypeClosed, Clinic: clinicA, Kind: "patient", Record: 2, Session: "s2", Reason: ReasonReleased})
	// A late close of an earlier session leaves the current one shown.
	hs.Publish(Event{Type: TypeClosed, Clinic: clinicA, Kind: "patient", Record: 1, Session: "s0", Reason: ReasonExpired})

	c := hs.dial(t, clinicA, -1)
	readReset(t, c)
	e := read(t, c)
	if e.Type != TypeEditing || e.Record != 1 || e.Session != "s1" || e.User != "dr.kim" || e.Side != SideCloud {
		t.Fatalf("after reset got %+v, want the editing event of record 1 (session s1)", e)
	}
	if got := hs.Editing(clinicA); len(got) != 1 || got[0].Record != 1 {
		t.Errorf("Editing(A) = %+v, want record 1 only", got)
	}
	if got := hs.Editing(clinicB); len(got) != 1 || got[0].Record != 3 {
		t.Errorf("Editing(B) = %+v, want record 3 only", got)
	}
	hs.Publish(ev(clinicA, 9))
	if e := read(t, c); e.Type != TypeSaved || e.Record != 9 {
		t.Fatalf("then got %+v, want the live saved event of record 9", e)
	}
}
