package suite

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
	"github.com/scsync/scsync/bench/internal/stats"
)

// Notify measures the live "Editing by …" event's fan-out to viewers.
var Notify = Bench{
	Name: "notify",
	Doc:  "an edit started on sc-local (lockd, then the Editing event over RabbitMQ) until each of V viewers connected to sc-cloud's WebSocket has it, vs a bare RabbitMQ → WebSocket fan-out",
	Flags: func(fs *flag.FlagSet) RunFunc {
		viewers := fs.Int("viewers", 500, "connected WebSocket viewers")
		events := fs.Int("events", 60, "edit sessions opened (one Editing event each)")
		gap := fs.Duration("interval", 100*time.Millisecond, "pause between one event's full delivery and the next edit")
		return func(ctx context.Context, c Config) ([]results.Result, error) {
			return runNotify(ctx, c, *viewers, *events, *gap)
		}
	},
}

// fanout collects, per event key, when each viewer got it.
type fanout struct {
	mu      sync.Mutex
	lat     map[string][]time.Duration // delivery latencies
	arrived map[string][]time.Time
	from    map[string]time.Time // request start, for ours
	target  int
	waiters map[string]chan struct{}
}

func newFanout(target int) *fanout {
	return &fanout{lat: map[string][]time.Duration{}, arrived: map[string][]time.Time{}, from: map[string]time.Time{},
		target: target, waiters: map[string]chan struct{}{}}
}

// waiter is closed once key reached every viewer; f.mu is held.
func (f *fanout) waiter(key string) chan struct{} {
	ch, ok := f.waiters[key]
	if !ok {
		ch = make(chan struct{})
		f.waiters[key] = ch
	}
	return ch
}

// expect returns a channel closed when key has reached every viewer and
// notes from, the start of the request that caused it.
func (f *fanout) expect(key string, from time.Time) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.from[key] = from
	return f.waiter(key)
}

func (f *fanout) got(key string, d time.Duration, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lat[key] = append(f.lat[key], d)
	f.arrived[key] = append(f.arrived[key], at)
	if len(f.lat[key]) == f.target {
		close(f.waiter(key))
	}
}

func (f *fanout) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.lat[key])
}

// all is every delivery latency, and every arrival since its request.
func (f *fanout) all() (lat, sinceRequest []time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, ds := range f.lat {
		lat = append(lat, ds...)
		if from, ok := f.from[key]; ok {
			for _, at := range f.arrived[key] {
				sinceRequest = append(sinceRequest, at.Sub(from))
			}
		}
	}
	return lat, sinceRequest
}

func runNotify(ctx context.Context, c Config, viewers, events int, gap time.Duration) ([]results.Result, error) {
	bare, err := bareFanout(ctx, c, viewers, events, gap)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	c.Log.Info("baseline done", "p50_ms", stats.Millis(bare.P50), "p99_ms", stats.Millis(bare.P99))

	var cl stack.Cleanup
	defer cl.Close()
	_, prefix, err := c.Env.RedisPrefix(ctx, &cl, "bench_notify")
	if err != nil {
		return nil, err
	}
	lockAddr, err := stack.FreeAddr()
	if err != nil {
		return nil, err
	}
	svcTok, clinicTok := stack.Name("service_token"), stack.Name("clinic_token")
	a, err := stack.NewAppliance(ctx, &cl, c.Env, c.Bin, "notify", "SC_CLOUD_LOCKD_URL=http://"+lockAddr, "SC_CLOUD_LOCKD_TOKEN="+svcTok)
	if err != nil {
		return nil, err
	}
	clinic, err := a.Enroll(ctx, "Bench Notify Dental")
	if err != nil {
		return nil, err
	}
	if _, _, err := stack.StartLockd(ctx, &cl, c.Env, c.Bin, lockAddr, prefix+"lockd:", svcTok, map[string]string{clinicTok: clinic.ID}); err != nil {
		return nil, err
	}
	if err := a.StartLocal(ctx, clinic, "SC_LOCAL_LOCKD_URL=http://"+lockAddr, "SC_LOCAL_LOCKD_TOKEN="+clinicTok); err != nil {
		return nil, err
	}
	var p struct {
		ID string `json:"id"`
	}
	if err := stack.Call(ctx, http.MethodPost, clinic.Base+"/v1/patients", "", map[string]any{"data": barePatient(1, 200)}, &p, http.StatusCreated); err != nil {
		return nil, err
	}
	if err := waitCloudHead(ctx, a.Cloud, clinic, 1, time.Minute); err != nil {
		return nil, err
	}

	f := newFanout(viewers)
	vs, err := connectViewers(ctx, viewers, clinic.CloudPrefix(a.Cloud)+"events?access_token="+a.AdminToken, func(e wsEvent, at time.Time) {
		if e.Type == "editing" && e.Record == p.ID {
			f.got(e.Session, at.Sub(e.At), at)
		}
	})
	defer closeViewers(vs)
	if err != nil {
		return nil, err
	}
	edit := clinic.Base + "/v1/patients/" + p.ID
	for range events {
		var si struct {
			Session string `json:"session"`
		}
		t0 := time.Now()
		if err := stack.Call(ctx, http.MethodPost, edit+"/edit", "", map[string]string{"client": "bench-ws", "user": "dr.bench"}, &si, http.StatusOK); err != nil {
			return nil, err
		}
		select {
		case <-f.expect(si.Session, t0):
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("editing event of session %s reached %d of %d viewers in 30s", si.Session, f.count(si.Session), viewers)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := stack.Call(ctx, http.MethodPost, edit+"/close", "", map[string]string{"session": si.Session}, nil, http.StatusOK); err != nil {
			return nil, err
		}
		time.Sleep(gap)
	}
	var drops int64
	for _, v := range vs {
		if err := v.Err(); err != nil {
			return nil, fmt.Errorf("a viewer was disconnected: %w", err)
		}
		drops += v.Reconnects.Load()
	}
	lat, sinceReq := f.all()
	ours, e2e := stats.Summarize(lat), stats.Summarize(sinceReq)
	r := results.New("notify", "notification_latency_p50", "ms", results.LowerBetter, round3(stats.Millis(ours.P50)), round3(stats.Millis(bare.P50)))
	r.OursLatency, r.BaselineLatency = latency(ours), latency(bare)
	r.Params = map[string]any{"viewers": viewers, "events": events, "interval_ms": gap.Milliseconds(), "viewers_on": "sc-cloud", "edit_on": "sc-local"}
	r.Extra = map[string]float64{"ours_edit_request_to_viewer_p50_ms": round3(stats.Millis(e2e.P50)), "ours_edit_request_to_viewer_p99_ms": round3(stats.Millis(e2e.P99)),
		"viewers_dropped_by_hub": float64(drops)}
	r.Note = "ours: from the Editing event's creation on sc-local (its at, same clock) to its arrival at each viewer of sc-cloud (sc-local → RabbitMQ topic exchange → sc-cloud hub → WebSocket); " +
		"baseline: publish to a RabbitMQ topic exchange → one consumer → write to every viewer's WebSocket (coder/websocket), same viewers, same message count"
	return []results.Result{r}, nil
}

func connectViewers(ctx context.Context, n int, url string, fn func(wsEvent, time.Time)) ([]*wsViewer, error) {
	vs := make([]*wsViewer, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range n {
		g.Go(func() error {
			v, err := dialViewer(ctx, url, fn)
			if err != nil {
				return err
			}
			vs[i] = v
			_ = gctx
			return nil
		})
	}
	return vs, g.Wait()
}

func closeViewers(vs []*wsViewer) {
	var wg sync.WaitGroup
	for _, v := range vs {
		if v != nil {
			wg.Go(v.Close)
		}
	}
	wg.Wait()
}

// bareFanout is the notification baseline: RabbitMQ topic exchange → one
// consumer → a WebSocket write to every viewer, all on this machine.
func bareFanout(ctx context.Context, c Config, viewers, events int, gap time.Duration) (stats.Summary, error) {
	var cl stack.Cleanup
	defer cl.Close()
	amqpURL, err := c.Env.Vhost(ctx, &cl, "bench_bare")
	if err != nil {
		return stats.Summary{}, err
	}
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return stats.Summary{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return stats.Summary{}, err
	}
	if err := ch.ExchangeDeclare("bare.events", "topic", true, false, false, false, nil); err != nil {
		return stats.Summary{}, err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return stats.Summary{}, err
	}
	if err := ch.QueueBind(q.Name, "#", "bare.events", false, nil); err != nil {
		return stats.Summary{}, err
	}
	ds, err := ch.ConsumeWithContext(ctx, q.Name, "", true, true, false, false, nil)
	if err != nil {
		return stats.Summary{}, err
	}

	// The server: every viewer has a queue and a writer, as a hub does.
	var mu sync.Mutex
	queues := map[chan []byte]struct{}{}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		q := make(chan []byte, 256)
		mu.Lock()
		queues[q] = struct{}{}
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(queues, q)
			mu.Unlock()
		}()
		rctx := conn.CloseRead(r.Context())
		for {
			select {
			case <-rctx.Done():
				return
			case b := <-q:
				if conn.Write(rctx, websocket.MessageText, b) != nil {
					return
				}
			}
		}
	})}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return stats.Summary{}, err
	}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	go func() {
		for d := range ds {
			mu.Lock()
			for q := range queues {
				select {
				case q <- d.Body:
				default:
				}
			}
			mu.Unlock()
		}
	}()

	f := newFanout(viewers)
	vs, err := connectViewers(ctx, viewers, "http://"+ln.Addr().String()+"/", func(e wsEvent, at time.Time) {
		f.got(e.Session, at.Sub(e.Sent), at)
	})
	defer closeViewers(vs)
	if err != nil {
		return stats.Summary{}, err
	}
	for i := range events {
		key := fmt.Sprintf("bare-%d", i)
		full := f.expect(key, time.Now())
		body, err := json.Marshal(wsEvent{Type: "editing", Kind: "patient", Record: "1", Session: key, Sent: time.Now(), At: time.Now()})
		if err != nil {
			return stats.Summary{}, err
		}
		if err := ch.PublishWithContext(ctx, "bare.events", "events.1.patient", false, false, amqp.Publishing{ContentType: "application/json", Body: body}); err != nil {
			return stats.Summary{}, err
		}
		select {
		case <-full:
		case <-time.After(30 * time.Second):
			return stats.Summary{}, errors.New("bare fan-out did not reach every viewer in 30s")
		case <-ctx.Done():
			return stats.Summary{}, ctx.Err()
		}
		time.Sleep(gap)
	}
	lat, _ := f.all()
	return stats.Summarize(lat), nil
}
