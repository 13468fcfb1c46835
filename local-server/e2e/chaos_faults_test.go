package e2e

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"
)

// fault is one kind of trouble the injector makes.
type fault string

const (
	faultKillLocal fault = "kill sc-local"
	faultKillCloud fault = "kill sc-cloud node"
	faultKillLockd fault = "kill lockd replica"
	faultRabbit    fault = "restart RabbitMQ"
	faultRedis     fault = "restart Redis (lockd's)"
	faultCutLink   fault = "cut link"
	faultDelayLink fault = "delay link"
	faultStopS3    fault = "stop MinIO"
)

var allFaults = []fault{faultKillLocal, faultKillCloud, faultKillLockd, faultRabbit, faultRedis, faultCutLink, faultDelayLink, faultStopS3}

// injector makes one fault at a time, chosen and shaped by the seed, with
// a short calm between faults. It runs on the test's goroutine (it
// restarts processes, which may fail the test).
type injector struct {
	t      *testing.T
	env    *chaosEnv
	rnd    *rand.Rand
	start  time.Time
	counts map[fault]int
	log    []string
}

func (in *injector) logf(format string, args ...any) {
	line := fmt.Sprintf("%7.1fs  ", time.Since(in.start).Seconds()) + fmt.Sprintf(format, args...)
	in.log = append(in.log, line)
	in.t.Log("chaos: " + line)
}

// dur is a random duration in [lo, hi).
func (in *injector) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(in.rnd.Int64N(int64(hi-lo)))
}

// run injects faults until deadline, and at least one of every kind: each
// round is a seeded permutation of every kind.
func (in *injector) run(deadline time.Time) {
	var queue []fault
	for time.Now().Before(deadline) || len(in.counts) < len(allFaults) {
		if len(queue) == 0 {
			for _, i := range in.rnd.Perm(len(allFaults)) {
				queue = append(queue, allFaults[i])
			}
		}
		f := queue[0]
		queue = queue[1:]
		time.Sleep(in.dur(time.Second, 4*time.Second)) // calm between faults, part of the schedule
		in.inject(f)
		in.counts[f]++
	}
}

func (in *injector) inject(f fault) {
	e := in.env
	switch f {
	case faultKillLocal:
		i := in.rnd.IntN(len(e.clinics))
		down := in.dur(500*time.Millisecond, 4*time.Second)
		c := e.clinics[i]
		in.logf("SIGKILL sc-local of clinic %d, down for %s", i+1, down.Round(time.Millisecond))
		c.proc.kill9(in.t)
		time.Sleep(down)
		c.proc.restart(in.t)
		waitReady(in.t, c.proc, c.base)
		in.logf("  sc-local of clinic %d ready again", i+1)
	case faultKillCloud:
		i := in.rnd.IntN(len(e.s.nodes))
		down := in.dur(500*time.Millisecond, 4*time.Second)
		in.logf("SIGKILL sc-cloud node %d, down for %s", i+1, down.Round(time.Millisecond))
		e.s.nodes[i].kill9(in.t)
		time.Sleep(down)
		e.s.nodes[i].restart(in.t)
		waitReady(in.t, e.s.nodes[i], e.s.cloud[i])
		in.logf("  sc-cloud node %d ready again", i+1)
	case faultKillLockd:
		i := in.rnd.IntN(len(e.lockd))
		down := in.dur(500*time.Millisecond, 4*time.Second)
		in.logf("SIGKILL lockd replica %d, down for %s", i+1, down.Round(time.Millisecond))
		e.lockd[i].kill9(in.t)
		time.Sleep(down)
		e.lockd[i].restart(in.t)
		waitReady(in.t, e.lockd[i], "http://"+e.lockAddrs[i])
		in.logf("  lockd replica %d ready again", i+1)
	case faultRabbit:
		down := in.dur(time.Second, 3*time.Second)
		in.logf("SIGKILL RabbitMQ (private), down for %s", down.Round(time.Millisecond))
		e.rabbit.Kill()
		time.Sleep(down)
		e.rabbit.Start()
		in.logf("  RabbitMQ listening again")
	case faultRedis:
		down := in.dur(200*time.Millisecond, 2*time.Second)
		in.logf("SIGKILL Redis of lockd (private, every lock lost), down for %s", down.Round(time.Millisecond))
		e.redis.Kill()
		time.Sleep(down)
		e.redis.Start()
		in.logf("  Redis listening again")
	case faultCutLink, faultDelayLink:
		i := in.rnd.IntN(len(e.clinics))
		names := []string{"broker", "cloud API", "lockd"}
		n := in.rnd.IntN(len(names))
		link := e.links[i][n]
		if f == faultCutLink {
			d := in.dur(2*time.Second, 8*time.Second)
			in.logf("cut clinic %d's %s link for %s", i+1, names[n], d.Round(time.Millisecond))
			link.Cut()
			time.Sleep(d)
			link.Restore()
		} else {
			d := in.dur(4*time.Second, 12*time.Second)
			lat := in.dur(50*time.Millisecond, 400*time.Millisecond)
			in.logf("delay clinic %d's %s link by %s per chunk for %s", i+1, names[n], lat.Round(time.Millisecond), d.Round(time.Millisecond))
			link.SetDelay(lat)
			time.Sleep(d)
			link.SetDelay(0)
		}
		in.logf("  link restored")
	case faultStopS3:
		d := in.dur(3*time.Second, 15*time.Second)
		in.logf("stop MinIO (private) for %s", d.Round(time.Millisecond))
		e.minio.Kill()
		time.Sleep(d)
		e.minio.Start()
		in.logf("  MinIO healthy again")
	}
}

// summary lists how many faults of each kind were injected.
func (in *injector) summary() string {
	keys := make([]string, 0, len(in.counts))
	total := 0
	for f, n := range in.counts {
		keys = append(keys, fmt.Sprintf("    %-40s %6d", f, n))
		total += n
	}
	sort.Strings(keys)
	return fmt.Sprintf("%d faults injected:\n%s", total, strings.Join(keys, "\n"))
}

// heal makes sure every link is open and fast (every fault heals itself
// before the next; this is the belt to those braces).
func (e *chaosEnv) heal() {
	for _, ls := range e.links {
		for _, l := range ls {
			l.Restore()
			l.SetDelay(0)
		}
	}
}
