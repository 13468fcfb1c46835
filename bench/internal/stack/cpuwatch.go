package stack

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"
)

// CPUWatch measures the CPU time (user+system) the processes matching a
// command line use while it runs: the services of the stack, which the
// benchmarks do not start (PostgreSQL's backends for one database, the
// RabbitMQ broker). It samples /proc every 100 ms, so a process that
// starts and ends between two samples is missed, and the CPU a process used
// after its last sample is lost when it ends (PostgreSQL's backends come
// and go with their clients' pools).
//
// A sample costs the benchmark's own CPU, on the cores the measured
// processes use, so it is kept cheap: a process's command line is read
// until it has failed to match twice (a PostgreSQL backend shows the
// postmaster's until it sets its title), and a matching process's
// /proc/<pid>/stat stays open and is read again in place.
type CPUWatch struct {
	match func(cmdline string) bool
	stop  chan struct{}
	done  chan struct{}
	tick  int
	procs map[int]*watched
	// rejected counts the samples in which a process (still in /proc
	// at the tick noted) did not match.
	rejected map[int]rejection
	// gone is the CPU of matching processes that ended.
	gone time.Duration
	buf  []byte
}

type watched struct {
	fd          int // /proc/<pid>/stat
	first, last time.Duration
	tick        int // the last sample that saw it in /proc
}

type rejection struct{ tick, n int }

// WatchCPU starts watching the processes whose command line (arguments
// joined by spaces) match says to count.
func WatchCPU(match func(cmdline string) bool) *CPUWatch {
	w := newCPUWatch(match)
	w.sample(true)
	go func() {
		defer close(w.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				w.sample(false)
				return
			case <-t.C:
				w.sample(false)
			}
		}
	}()
	return w
}

func newCPUWatch(match func(cmdline string) bool) *CPUWatch {
	return &CPUWatch{match: match, stop: make(chan struct{}), done: make(chan struct{}),
		procs: map[int]*watched{}, rejected: map[int]rejection{}, buf: make([]byte, 4096)}
}

// Stop ends the watch and returns the CPU time used since it started.
func (w *CPUWatch) Stop() time.Duration {
	close(w.stop)
	<-w.done
	return w.close()
}

// close closes the files the watch holds and returns the CPU time used.
func (w *CPUWatch) close() time.Duration {
	sum := w.gone
	for pid, p := range w.procs {
		sum += p.last - p.first
		_ = syscall.Close(p.fd)
		delete(w.procs, pid)
	}
	return sum
}

func (w *CPUWatch) sample(start bool) {
	d, err := os.Open("/proc")
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	_ = d.Close()
	w.tick++
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if p, ok := w.procs[pid]; ok {
			if cpu, err := w.readCPU(p.fd); err == nil {
				p.last, p.tick = cpu, w.tick
			}
			continue
		}
		if r, ok := w.rejected[pid]; ok && r.n >= 2 {
			w.rejected[pid] = rejection{tick: w.tick, n: r.n}
			continue
		}
		cmd, err := w.readFile("/proc/" + name + "/cmdline")
		if err != nil {
			continue
		}
		if !w.match(string(bytes.TrimSpace(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))) {
			w.rejected[pid] = rejection{tick: w.tick, n: w.rejected[pid].n + 1}
			continue
		}
		delete(w.rejected, pid)
		fd, err := syscall.Open("/proc/"+name+"/stat", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		cpu, err := w.readCPU(fd)
		if err != nil {
			_ = syscall.Close(fd)
			continue
		}
		p := &watched{fd: fd, last: cpu, tick: w.tick}
		if start {
			p.first = cpu // else 0: it started since
		}
		w.procs[pid] = p
	}
	// A process gone from /proc (or whose stat no longer reads) has
	// ended, and its pid is free for another.
	for pid, p := range w.procs {
		if p.tick != w.tick {
			w.gone += p.last - p.first
			_ = syscall.Close(p.fd)
			delete(w.procs, pid)
		}
	}
	for pid, r := range w.rejected {
		if r.tick != w.tick {
			delete(w.rejected, pid)
		}
	}
}

// readFile reads a small /proc file into w.buf (without the poller
// registration os.ReadFile makes).
func (w *CPUWatch) readFile(path string) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = syscall.Close(fd) }()
	n, err := syscall.Read(fd, w.buf)
	if err != nil {
		return nil, err
	}
	return w.buf[:n], nil
}

// readCPU reads user+system time from an open /proc/<pid>/stat.
func (w *CPUWatch) readCPU(fd int) (time.Duration, error) {
	n, err := syscall.Pread(fd, w.buf, 0)
	if err != nil {
		return 0, err
	}
	return statCPU(w.buf[:n])
}

var errStat = errors.New("stack: unexpected /proc stat format")

// statCPU is utime+stime from the text of /proc/<pid>/stat.
func statCPU(stat []byte) (time.Duration, error) {
	// The command name (field 2) may hold spaces: count from after ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errStat
	}
	// After ')': state is field 3, so utime (14) and stime (15) are the
	// 12th and 13th.
	var ticks int64
	field := 0
	for _, f := range bytes.Fields(stat[i+1:]) {
		field++
		if field == 12 || field == 13 {
			v, err := strconv.ParseInt(string(f), 10, 64)
			if err != nil {
				return 0, errStat
			}
			ticks += v
			if field == 13 {
				return time.Duration(ticks) * time.Second / clockTick, nil
			}
		}
	}
	return 0, errStat
}
