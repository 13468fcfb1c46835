// Package suite holds the benchmarks of `make bench` and what runs them:
// each benchmark is a standalone program (bench/cmd/<name>) and
// bench/cmd/all runs every one in sequence and writes bench/results.json.
package suite

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/scsync/scsync/bench/internal/results"
	"github.com/scsync/scsync/bench/internal/stack"
)

// Config is what every benchmark is given.
type Config struct {
	Env stack.Env
	Bin stack.Binaries
	Log *slog.Logger
}

// RunFunc runs a benchmark once its flags are parsed.
type RunFunc func(ctx context.Context, c Config) ([]results.Result, error)

// Bench is one benchmark.
type Bench struct {
	Name string
	// Doc is one line: what it measures and against what.
	Doc string
	// Flags registers the benchmark's flags (whose defaults are the sizes
	// `make bench` uses) and returns the function that runs it.
	Flags func(fs *flag.FlagSet) RunFunc
}

// All is every benchmark, in the order `make bench` runs them.
func All() []Bench {
	return []Bench{Idle, Lock, Replication, Latency, Notify, Files, Backfill, Verify, Scale}
}

// children are the helper processes a benchmark starts from its own
// binary (a bare baseline measured as a process of its own), selected by
// the environment variable childEnv.
func children() map[string]func(ctx context.Context) error {
	return map[string]func(ctx context.Context) error{
		childBareServer: bareServer,
		childBareUpload: bareUpload,
		childCPULoad:    cpuLoad,
	}
}

const childEnv = "SCSYNC_BENCH_CHILD"

// Main runs one benchmark as a program: its flags, the common flags, the
// table on stdout and, with -json, the results file. It returns the exit
// code.
func Main(b Bench) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if code, ok := runChild(ctx); ok {
		return code
	}
	fs := flag.NewFlagSet(b.Name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s: %s\n\nUsage: go run ./bench/cmd/%s [flags]\n", b.Name, b.Doc, b.Name)
		fs.PrintDefaults()
	}
	run := b.Flags(fs)
	common := commonFlags(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: common.level()}))
	start := time.Now()
	cfg, cleanup, err := common.config(ctx, log)
	if err != nil {
		log.Error("setup failed", "err", err)
		return 1
	}
	defer cleanup()
	rs, err := run(ctx, cfg)
	if err != nil {
		log.Error("benchmark failed", "benchmark", b.Name, "err", err)
		return 1
	}
	if err := report(os.Stdout, common.json, start, rs); err != nil {
		log.Error("report failed", "err", err)
		return 1
	}
	return 0
}

// MainAll runs every benchmark (or those named by -only) with their
// default sizes, one after the other, and writes the results file.
func MainAll() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if code, ok := runChild(ctx); ok {
		return code
	}
	fs := flag.NewFlagSet("all", flag.ContinueOnError)
	common := commonFlags(fs)
	only := fs.String("only", "", "comma-separated benchmarks to run (default: all): "+strings.Join(names(), ","))
	keepGoing := fs.Bool("keep-going", true, "run the other benchmarks when one fails (the run still exits non-zero)")
	from := fs.String("from", "", "run nothing: print the table of this results file")
	markdown := fs.Bool("markdown", false, "with -from: print the table as Markdown (as docs/performance.md has it)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *from != "" {
		return printFrom(*from, *markdown)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: common.level()}))
	start := time.Now()
	cfg, cleanup, err := common.config(ctx, log)
	if err != nil {
		log.Error("setup failed", "err", err)
		return 1
	}
	defer cleanup()
	var want []string
	if *only != "" {
		want = strings.Split(*only, ",")
	}
	var all []results.Result
	var failed []string
	for _, b := range All() {
		if want != nil && !slices.Contains(want, b.Name) {
			continue
		}
		bfs := flag.NewFlagSet(b.Name, flag.ContinueOnError)
		run := b.Flags(bfs)
		log.Info("benchmark starting", "benchmark", b.Name)
		t0 := time.Now()
		rs, err := run(ctx, cfg)
		if err != nil {
			log.Error("benchmark failed", "benchmark", b.Name, "err", err)
			failed = append(failed, b.Name)
			if !*keepGoing || ctx.Err() != nil {
				break
			}
			continue
		}
		log.Info("benchmark done", "benchmark", b.Name, "seconds", time.Since(t0).Round(time.Second).Seconds())
		all = append(all, rs...)
		if common.json != "" {
			// Keep what is measured so far, should a later benchmark fail.
			f := results.File{Started: start.UTC().Truncate(time.Second), WallSeconds: time.Since(start).Round(time.Second).Seconds(),
				Machine: results.ThisMachine(), Results: all}
			if err := results.Write(common.json, f); err != nil {
				log.Warn("results not written", "err", err)
			}
		}
		if err := results.Table(os.Stderr, rs); err != nil {
			log.Warn("table not printed", "err", err)
		}
	}
	if err := report(os.Stdout, common.json, start, all); err != nil {
		log.Error("report failed", "err", err)
		return 1
	}
	if len(failed) > 0 {
		log.Error("benchmarks failed", "benchmarks", strings.Join(failed, ","))
		return 1
	}
	return 0
}

func printFrom(path string, markdown bool) int {
	f, err := results.Read(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if markdown {
		err = results.Markdown(os.Stdout, f.Results)
	} else {
		err = results.Table(os.Stdout, f.Results)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func names() []string {
	var out []string
	for _, b := range All() {
		out = append(out, b.Name)
	}
	return out
}

func report(w io.Writer, jsonPath string, start time.Time, rs []results.Result) error {
	fmt.Fprintln(w)
	if err := results.Table(w, rs); err != nil {
		return err
	}
	wall := time.Since(start)
	fmt.Fprintf(w, "\nratio = ours / baseline; \"better\" says which way is better. wall time %s\n", wall.Round(time.Second))
	if jsonPath == "" {
		return nil
	}
	f := results.File{Started: start.UTC().Truncate(time.Second), WallSeconds: wall.Round(time.Second).Seconds(), Machine: results.ThisMachine(), Results: rs}
	if err := results.Write(jsonPath, f); err != nil {
		return err
	}
	fmt.Fprintf(w, "written: %s\n", jsonPath)
	return nil
}

type common struct {
	json    string
	bin     string
	verbose bool
}

func commonFlags(fs *flag.FlagSet) *common {
	c := &common{}
	fs.StringVar(&c.json, "json", "", "write the results as JSON to this file")
	fs.StringVar(&c.bin, "bin", "", "directory with sc-local, sc-cloud and lockd already built (default: build them into a temp dir)")
	fs.BoolVar(&c.verbose, "v", false, "log progress at debug level")
	return c
}

func (c *common) level() slog.Level {
	if c.verbose {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

func (c *common) config(ctx context.Context, log *slog.Logger) (Config, func(), error) {
	cfg := Config{Env: stack.FromEnvironment(log), Log: log}
	if c.bin != "" {
		cfg.Bin = stack.InDir(c.bin)
		return cfg, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "scsync-bench-bin")
	if err != nil {
		return cfg, nil, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	log.Info("building sc-local, sc-cloud and lockd", "dir", dir)
	if cfg.Bin, err = stack.Build(ctx, dir); err != nil {
		cleanup()
		return cfg, nil, err
	}
	return cfg, cleanup, nil
}

// runChild runs this process as a helper when childEnv names one.
func runChild(ctx context.Context) (int, bool) {
	name := os.Getenv(childEnv)
	if name == "" {
		return 0, false
	}
	fn, ok := children()[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown %s=%s\n", childEnv, name)
		return 2, true
	}
	if err := fn(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1, true
	}
	return 0, true
}

// startChild runs this binary again as helper name with env.
func startChild(cl *stack.Cleanup, name string, env ...string) (*stack.Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return stack.Start(cl, name, self, append([]string{childEnv + "=" + name}, env...))
}
