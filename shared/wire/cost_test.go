package wire

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/testenv"
)

// TestTopologyCost measures, on a private broker each, the idle cost of the
// candidate broker topologies for N clinics (SCSYNC_TOPOLOGY_COST=N, e.g.
// 2000; SCSYNC_TOPOLOGY_CANDIDATES picks some by name): the broker's RSS,
// its CPU at rest over 10 s, its Erlang process count, and how long creating
// the topology took. It is a measuring tool for docs/architecture.md, not a
// check, and runs only when asked.
func TestTopologyCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SCSYNC_TOPOLOGY_COST"))
	if n <= 0 {
		t.Skip("set SCSYNC_TOPOLOGY_COST=<clinics> to measure the topology candidates")
	}
	only := map[string]bool{}
	for _, s := range strings.Split(os.Getenv("SCSYNC_TOPOLOGY_CANDIDATES"), ",") {
		if s != "" {
			only[s] = true
		}
	}
	events := func(c ids.ID, extra amqp.Table) costQueue {
		args := amqp.Table{"x-max-length": int32(10000), "x-overflow": "drop-head", "x-message-ttl": int32(3600000)}
		for k, v := range extra {
			args[k] = v
		}
		return costQueue{name: "scsync.events.clinic." + c.String(), args: args, ex: "scsync.events", key: "clinic." + c.String() + ".#"}
	}
	quorum := amqp.Table{"x-queue-type": "quorum", "x-single-active-consumer": true, "x-dead-letter-exchange": "scsync.dead", "x-delivery-limit": int32(50)}
	classic := func(extra amqp.Table) amqp.Table {
		a := amqp.Table{"x-dead-letter-exchange": "scsync.dead", "x-max-length": int32(10000), "x-overflow": "drop-head"}
		for k, v := range extra {
			a[k] = v
		}
		return a
	}
	shardBinding := func(c ids.ID) costQueue {
		return costQueue{name: fmt.Sprintf("scsync.up.shard.%d", Shard(c, 16)), ex: "scsync.up", key: "clinic." + c.String(), bindOnly: true}
	}
	type candidate struct {
		name   string
		conf   string
		shared []costQueue
		clinic func(c ids.ID) []costQueue
	}
	var shards []costQueue
	for k := range 16 {
		shards = append(shards, costQueue{name: fmt.Sprintf("scsync.up.shard.%d", k), args: quorum})
	}
	candidates := []candidate{
		{name: "empty", clinic: func(ids.ID) []costQueue { return nil }},
		{name: "quorum-per-clinic", clinic: func(c ids.ID) []costQueue {
			return []costQueue{
				{name: "scsync.up." + c.String(), args: quorum, ex: "scsync.up", key: "clinic." + c.String()},
				{name: "scsync.down." + c.String(), args: quorum, ex: "scsync.down", key: "clinic." + c.String()},
				events(c, nil),
			}
		}},
		{name: "shards+classic-v1", shared: shards, clinic: func(c ids.ID) []costQueue {
			return []costQueue{shardBinding(c), {name: "scsync.down." + c.String(), args: classic(nil), ex: "scsync.down", key: "clinic." + c.String()}, events(c, nil)}
		}},
		{name: "shards+classic-v1-lazy", shared: shards, clinic: func(c ids.ID) []costQueue {
			lazy := amqp.Table{"x-queue-mode": "lazy"}
			return []costQueue{shardBinding(c), {name: "scsync.down." + c.String(), args: classic(lazy), ex: "scsync.down", key: "clinic." + c.String()}, events(c, lazy)}
		}},
		{name: "shards+classic-v2", shared: shards, clinic: func(c ids.ID) []costQueue {
			v2 := amqp.Table{"x-queue-version": int32(2)}
			return []costQueue{shardBinding(c), {name: "scsync.down." + c.String(), args: classic(v2), ex: "scsync.down", key: "clinic." + c.String()}, events(c, v2)}
		}},
		{name: "shards+merged-classic-v2", shared: shards, clinic: func(c ids.ID) []costQueue {
			v2 := amqp.Table{"x-queue-version": int32(2)}
			q := "scsync.down." + c.String()
			return []costQueue{shardBinding(c), {name: q, args: classic(v2), ex: "scsync.down", key: "clinic." + c.String()},
				{name: q, ex: "scsync.events", key: "clinic." + c.String() + ".#", bindOnly: true}}
		}},
	}
	// The same candidates with the broker's statistics collection tuned as
	// deployments/rabbitmq/rabbitmq.conf does (per-object statistics every
	// 30 s instead of 5 s) or turned off (the management API still serves
	// users, permissions and connections; Prometheus keeps its metrics).
	for _, v := range []struct{ suffix, conf string }{
		{"/stats-30s", "collect_statistics_interval = 30000"},
		{"/no-mgmt-metrics", "management_agent.disable_metrics_collector = true"},
	} {
		for _, c := range candidates[:len(candidates):len(candidates)] {
			if c.conf == "" && c.name != "shards+classic-v1" && c.name != "shards+classic-v1-lazy" {
				c.name += v.suffix
				c.conf = v.conf
				candidates = append(candidates, c)
			}
		}
	}
	var out []string
	for _, cand := range candidates {
		if len(only) > 0 && !only[cand.name] && !only[strings.Split(cand.name, "/")[0]] {
			continue
		}
		t.Run(cand.name, func(t *testing.T) {
			r := testenv.StartPrivateRabbitManagedConf(t, cand.conf)
			pid := beamPID(t, r.MgmtURL)
			// Creating thousands of quorum queues stalls a loaded broker
			// for longer than the default heartbeat.
			conn, err := amqp.DialConfig(r.URL, amqp.Config{Heartbeat: 5 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			for _, ex := range []string{"scsync.up", "scsync.down", "scsync.dead", "scsync.events", "scsync.events.up"} {
				if err := ch.ExchangeDeclare(ex, "topic", true, false, false, false, nil); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := ch.QueueDeclare("scsync.dead", true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
				t.Fatal(err)
			}
			for _, q := range cand.shared {
				if _, err := ch.QueueDeclare(q.name, true, false, false, false, q.args); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ch, err := conn.Channel()
					if err != nil {
						errs <- err
						return
					}
					defer func() { _ = ch.Close() }()
					for i := w; i < n; i += 8 {
						c := ids.ID(1_000_000_000 + int64(i)*7919)
						for _, q := range cand.clinic(c) {
							if !q.bindOnly {
								if _, err := ch.QueueDeclare(q.name, true, false, false, false, q.args); err != nil {
									errs <- err
									return
								}
							}
							if q.ex != "" {
								if err := ch.QueueBind(q.name, q.key, q.ex, false, nil); err != nil {
									errs <- err
									return
								}
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			took := time.Since(start)
			load0 := loadAvg()
			time.Sleep(30 * time.Second) // let the broker settle (stats, WAL flushes)
			cpu := idleCPU(t, pid, 10*time.Second)
			rss := rssKB(t, pid)
			procs := procUsed(t, r.MgmtURL)
			line := fmt.Sprintf("%-26s clinics=%d create=%6.1fs rss=%5.0fMiB idle_cpu=%5.2f%% erlang_procs=%6d load=%s..%s",
				cand.name, n, took.Seconds(), float64(rss)/1024, cpu*100, procs, load0, loadAvg())
			t.Log(line)
			out = append(out, line)
		})
	}
	for _, l := range out {
		t.Log(l)
	}
}

type costQueue struct {
	name     string
	args     amqp.Table
	ex, key  string
	bindOnly bool
}

// beamPID finds the beam.smp of the private node (its node name is in the
// VM's environment).
func beamPID(t *testing.T, mgmt string) int {
	t.Helper()
	var ov struct {
		Node string `json:"node"`
	}
	mgmtGet(t, mgmt, "/api/overview", &ov)
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "beam.smp") {
			continue
		}
		env, err := os.ReadFile(strings.TrimSuffix(f, "cmdline") + "environ")
		if err == nil && strings.Contains(string(env), "RABBITMQ_NODENAME="+ov.Node+"\x00") {
			pid, _ := strconv.Atoi(strings.Split(f, "/")[2])
			return pid
		}
	}
	t.Fatalf("no beam.smp for node %s", ov.Node)
	return 0
}

func mgmtGet(t *testing.T, base, path string, out any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, base+path, nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v: %s", path, err, b)
	}
}

func procUsed(t *testing.T, mgmt string) int {
	var nodes []struct {
		Procs int `json:"proc_used"`
	}
	mgmtGet(t, mgmt, "/api/nodes", &nodes)
	if len(nodes) == 0 {
		return 0
	}
	return nodes[0].Procs
}

func rssKB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb
		}
	}
	return 0
}

// idleCPU is the share of one core the process used over d (utime+stime).
func idleCPU(t *testing.T, pid int, d time.Duration) float64 {
	ticks := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		return u + st
	}
	a := ticks()
	start := time.Now()
	time.Sleep(d)
	b := ticks()
	return float64(b-a) / 100 / time.Since(start).Seconds() // CLK_TCK = 100
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
