package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// Hub defaults applied by NewHub for zero HubConfig fields.
const (
	DefaultBuffer       = 4096
	DefaultClientQueue  = 256
	DefaultPingInterval = 25 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// HubConfig configures a Hub. Zero values take the defaults above.
type HubConfig struct {
	// Buffer is how many recent events (of all clinics) the hub keeps for
	// clients that resume with since.
	Buffer int
	// ClientQueue is how many events may wait for one client; a client
	// further behind is disconnected.
	ClientQueue int
	// PingInterval is the keepalive period; a client that does not answer a
	// ping within it is disconnected.
	PingInterval time.Duration
	// WriteTimeout bounds writing one message to a client.
	WriteTimeout time.Duration
	// OriginPatterns are origins accepted besides the request's own host
	// (coder/websocket AcceptOptions.OriginPatterns: host patterns such as
	// "viewer.example.com" or "*.example.com", or "https://host:port").
	OriginPatterns []string
}

func (c HubConfig) withDefaults() HubConfig {
	if c.Buffer <= 0 {
		c.Buffer = DefaultBuffer
	}
	if c.ClientQueue <= 0 {
		c.ClientQueue = DefaultClientQueue
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	return c
}

// Hub numbers events, keeps the recent ones, and streams each clinic's events
// to that clinic's WebSocket clients. Create it with NewHub; all methods are
// safe for concurrent use.
type Hub struct {
	cfg HubConfig
	log *slog.Logger
	wg  sync.WaitGroup // ServeWS calls in flight

	mu      sync.Mutex
	closed  bool
	last    int64   // seq of the newest event
	count   int     // events in ring
	ring    []entry // event seq lives at ring[seq % len(ring)]
	clients map[*subscriber]struct{}
	// editing is who edits what now, per clinic and "kind/record": the
	// last editing event of each open session, which a client connecting
	// without a resume position is sent after its reset (so "Editing by
	// …" shows on load, not at the next event). A closed event removes it.
	editing map[ids.ID]map[string]presence
	// buf is where Publish encodes an event before copying it out.
	buf []byte
}

// presence is an open edit session as its editing event told it, and the
// Bus that event came through ("" when published on the Hub directly).
type presence struct {
	session string
	origin  string
	data    []byte
}

// entry is a numbered event, encoded once for all its clients.
type entry struct {
	clinic ids.ID
	data   []byte
	// reset: the clinic's clients were reset here (Resync); one resuming
	// from before it is reset again instead.
	reset bool
}

// subscriber is one WebSocket client.
type subscriber struct {
	clinic ids.ID
	queue  chan []byte
	// stop ends the client's stream, with errTooSlow or errShutdown as its
	// cause; it also aborts a write in progress.
	stop   context.Context
	cancel context.CancelCauseFunc
}

var (
	errTooSlow  = errors.New("events: client too slow")
	errShutdown = errors.New("events: hub closed")
	errRevoked  = errors.New("events: clinic disabled")
)

// NewHub returns a Hub. log may be nil.
func NewHub(cfg HubConfig, log *slog.Logger) *Hub {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{
		cfg: cfg,
		log: log,
		// Seqs start at the start time, so a position from another hub (a
		// restart, another cloud node) is never mistaken for one of ours.
		last:    time.Now().UnixMicro(),
		ring:    make([]entry, cfg.Buffer),
		clients: map[*subscriber]struct{}{},
		editing: map[ids.ID]map[string]presence{},
	}
}

// Publish numbers e, keeps it for resuming clients and queues it for every
// client of e.Clinic. It never blocks: a client whose queue is full is
// disconnected. After Close it does nothing.
//
// A reset is not streamed as it is: it comes from a Bus that found events
// of e.Clinic lost on their way here, and resyncs the clinic (see Resync),
// forgetting the sessions that came from the same origin only.
func (h *Hub) Publish(e Event) {
	if e.Type == TypeReset {
		h.resync(e.Clinic, e.origin)
		return
	}
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.last++
	e.Seq = h.last
	buf, err := e.AppendJSON(h.buf[:0])
	if err != nil {
		// Only a time beyond year 9999 fails to encode; keep the seq anyway.
		h.log.Error("event not encodable", "type", e.Type, "err", err)
		return
	}
	h.buf = buf
	data := bytes.Clone(buf) // kept in the ring and queued: its own, of its size
	h.keepLocked(entry{clinic: e.Clinic, data: data})
	h.trackLocked(e, data)
	for s := range h.clients {
		if s.clinic != e.Clinic {
			continue
		}
		select {
		case s.queue <- data:
		default:
			h.dropLocked(s, errTooSlow)
		}
	}
}

// keepLocked keeps en in the ring as the event numbered h.last.
func (h *Hub) keepLocked(en entry) {
	h.ring[h.last%int64(len(h.ring))] = en
	if h.count < len(h.ring) {
		h.count++
	}
}

// Resync tells every client of clinic to re-fetch its state. The open
// sessions the hub knows of are forgotten first: events of the clinic were
// lost, and a lost close would otherwise show a session gone for good as
// open (one still open is not shown until it is opened again). Then each
// client is sent a reset and the editing events of the sessions still
// known, as a client connecting anew; a client resuming from before it is
// reset too. It never blocks: a client whose queue cannot take it all is
// disconnected, and is reset when it reconnects. After Close it does
// nothing.
//
// A Bus that finds events lost resyncs through Publish instead, forgetting
// only the sessions of the server whose events were lost.
func (h *Hub) Resync(clinic ids.ID) { h.resync(clinic, "") }

// resync is Resync, forgetting only the sessions that came from origin
// (every session when origin is "").
func (h *Hub) resync(clinic ids.ID, origin string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	m := h.editing[clinic]
	for key, p := range m {
		if origin == "" || p.origin == origin {
			delete(m, key)
		}
	}
	if len(m) == 0 {
		delete(h.editing, clinic)
	}
	h.last++
	data := h.resetLocked(clinic)
	h.keepLocked(entry{clinic: clinic, data: data, reset: true})
	for s := range h.clients {
		if s.clinic != clinic {
			continue
		}
		// All or nothing: a client sent half the open sessions would
		// resume after the reset without the others.
		if cap(s.queue)-len(s.queue) < 1+len(h.editing[clinic]) {
			h.dropLocked(s, errTooSlow)
			continue
		}
		s.queue <- data
		for _, p := range h.editing[clinic] {
			s.queue <- p.data
		}
	}
}

// resetLocked encodes the reset of a client of clinic at h.last.
func (h *Hub) resetLocked(clinic ids.ID) []byte {
	data, _ := json.Marshal(Event{Seq: h.last, Type: TypeReset, Clinic: clinic, At: time.Now().UTC()})
	return data
}

// trackLocked keeps h.editing up to date with e. A close of another
// session than the one shown (events of two sides can cross) is ignored.
func (h *Hub) trackLocked(e Event, data []byte) {
	key := e.Kind + "/" + e.Record.String()
	switch e.Type {
	case TypeEditing:
		m := h.editing[e.Clinic]
		if m == nil {
			m = map[string]presence{}
			h.editing[e.Clinic] = m
		}
		m[key] = presence{session: e.Session, origin: e.origin, data: data}
	case TypeClosed:
		m := h.editing[e.Clinic]
		if cur, ok := m[key]; ok && (cur.session == "" || e.Session == "" || cur.session == e.Session) {
			delete(m, key)
			if len(m) == 0 {
				delete(h.editing, e.Clinic)
			}
		}
	}
}

// Editing returns the editing events of clinic's open sessions, as a new
// client is sent them.
func (h *Hub) Editing(clinic ids.ID) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Event, 0, len(h.editing[clinic]))
	for _, p := range h.editing[clinic] {
		var e Event
		if json.Unmarshal(p.data, &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// dropLocked removes s and ends its stream with cause.
func (h *Hub) dropLocked(s *subscriber, cause error) {
	delete(h.clients, s)
	s.cancel(cause)
}

// Close disconnects every client (close status 1001, going away) and waits
// until their handlers have returned. Later ServeWS calls answer 503, later
// Publish calls do nothing.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	for s := range h.clients {
		h.dropLocked(s, errShutdown)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// Disconnect closes every client of clinic (close status 1008): the clinic
// was disabled, so its tokens no longer open new streams either.
func (h *Hub) Disconnect(clinic ids.ID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.clients {
		if s.clinic == clinic {
			h.dropLocked(s, errRevoked)
		}
	}
}

// enter registers a ServeWS call; false once the hub is closed.
func (h *Hub) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	return true
}

// ServeWS upgrades r to a WebSocket and streams clinic's events to it until
// the client goes away, falls behind, or the hub closes. The caller has
// authenticated r and decided clinic. Query parameter since=<seq> resumes
// after that event; without it (or when it cannot be resumed from) the first
// message is a reset event. A bad since is a 400, a closed hub a 503, both as
// httpapi JSON errors.
func (h *Hub) ServeWS(w http.ResponseWriter, r *http.Request, clinic ids.ID) {
	since, resume, err := parseSince(r)
	if err != nil {
		httpapi.WriteError(w, h.log, err)
		return
	}
	if !h.enter() {
		httpapi.WriteError(w, h.log, httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the event hub is shutting down"))
		return
	}
	defer h.wg.Done()
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns})
	if err != nil {
		// Accept has answered the request (403 for a foreign origin…).
		h.log.Info("events websocket refused", "err", err)
		return
	}
	s, backlog := h.subscribe(clinic, since, resume)
	code, reason := h.stream(r.Context(), conn, s, backlog)
	h.unsubscribe(s)
	if code == 0 {
		_ = conn.CloseNow()
		return
	}
	_ = conn.Close(code, reason)
}

// parseSince reads the since query parameter.
func parseSince(r *http.Request) (since int64, resume bool, err error) {
	v := r.URL.Query().Get("since")
	if v == "" {
		return 0, false, nil
	}
	since, err = strconv.ParseInt(v, 10, 64)
	if err != nil || since < 0 {
		return 0, false, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "since must be a non-negative integer (the seq of the last event received)")
	}
	return since, true, nil
}

// subscribe registers a client of clinic and returns what it must be sent
// before its queue: the buffered events after since, or a reset. Both happen
// under one lock, so nothing is missed or sent twice.
func (h *Hub) subscribe(clinic ids.ID, since int64, resume bool) (*subscriber, [][]byte) {
	stop, cancel := context.WithCancelCause(context.Background())
	s := &subscriber{clinic: clinic, queue: make(chan []byte, h.cfg.ClientQueue), stop: stop, cancel: cancel}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		// Close ran after this ServeWS call entered.
		cancel(errShutdown)
		return s, nil
	}
	var backlog [][]byte
	oldest := h.last - int64(h.count) + 1
	resume = resume && since >= oldest-1 && since <= h.last
	if resume {
		for seq := since + 1; seq <= h.last; seq++ {
			e := h.ring[seq%int64(len(h.ring))]
			if e.clinic != clinic {
				continue
			}
			if e.reset {
				// The clinic was resynced since: so is this client, with
				// the sessions open now.
				resume = false
				break
			}
			backlog = append(backlog, e.data)
		}
	}
	if !resume {
		backlog = [][]byte{h.resetLocked(clinic)}
		// Then who is editing now: a reset client knows nothing yet.
		for _, p := range h.editing[clinic] {
			backlog = append(backlog, p.data)
		}
	}
	h.clients[s] = struct{}{}
	return s, backlog
}

func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, s)
	s.cancel(nil)
}

// stream writes backlog, then s's queue, to conn until something ends it. It
// returns the close status to send, or 0 when the connection is broken.
func (h *Hub) stream(ctx context.Context, conn *websocket.Conn, s *subscriber, backlog [][]byte) (websocket.StatusCode, string) {
	// CloseRead answers pings and the close handshake; its context ends when
	// the client goes away. Clients send no data messages.
	ctx, cancel := context.WithCancel(conn.CloseRead(ctx))
	pinging := make(chan struct{})
	go func() {
		defer close(pinging)
		h.keepalive(ctx, cancel, conn)
	}()
	defer func() {
		cancel()
		<-pinging
	}()

	write := func(data []byte) bool {
		wctx, wcancel := context.WithTimeout(ctx, h.cfg.WriteTimeout)
		defer wcancel()
		// A client dropped for being too slow while a write to it is stuck
		// must not hold its handler for the whole write timeout. On shutdown
		// the write in progress finishes (within WriteTimeout), so the client
		// gets a proper 1001 close instead of a cut connection.
		defer context.AfterFunc(s.stop, func() {
			if errors.Is(context.Cause(s.stop), errTooSlow) {
				wcancel()
			}
		})()
		return conn.Write(wctx, websocket.MessageText, data) == nil
	}
	for _, data := range backlog {
		if !write(data) {
			return h.ended(s)
		}
	}
	for {
		select {
		case data := <-s.queue:
			if !write(data) {
				return h.ended(s)
			}
		case <-s.stop.Done():
			return h.ended(s)
		case <-ctx.Done():
			return 0, ""
		}
	}
}

// ended returns the close status for a stream that ends: 1013 for a client
// that fell behind, 1001 on shutdown, 0 (none, the connection is broken)
// otherwise.
func (h *Hub) ended(s *subscriber) (websocket.StatusCode, string) {
	cause := context.Cause(s.stop)
	switch {
	case errors.Is(cause, errTooSlow):
		h.log.Info("events client too slow, disconnected", "clinic", s.clinic)
		return websocket.StatusTryAgainLater, "too slow; reconnect and resume"
	case errors.Is(cause, errShutdown):
		return websocket.StatusGoingAway, "server shutting down"
	case errors.Is(cause, errRevoked):
		return websocket.StatusPolicyViolation, "clinic disabled"
	}
	return 0, ""
}

// keepalive pings conn every PingInterval and cancels the stream when a pong
// does not come back within the next interval.
func (h *Hub) keepalive(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn) {
	t := time.NewTicker(h.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, h.cfg.PingInterval)
		err := conn.Ping(pctx)
		pcancel()
		if err != nil {
			if ctx.Err() == nil {
				h.log.Info("events client did not answer ping, disconnected", "err", err)
			}
			cancel()
			return
		}
	}
}

// RequestToken returns the bearer token of r: from "Authorization: Bearer
// <token>", or else from the access_token query parameter (browsers cannot
// set headers on a WebSocket). Servers authenticate event requests with it
// and must redact access_token from any URL they log.
func RequestToken(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		if scheme, tok, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}
