package ids

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/snowflake"
)

// configure sets the library's layout globals once, before any node exists.
// The library keeps them as package variables; every node in this process
// uses the scsync layout, so setting them once is safe.
var configure = sync.OnceFunc(func() {
	snowflake.Epoch = epochMillis
	snowflake.NodeBits = NodeBits
	snowflake.StepBits = StepBits
})

// GeneratorOptions tune a Generator. The zero value is usable.
type GeneratorOptions struct {
	// StateFile persists the high-water timestamp across restarts. Empty
	// means no persistence (cloud nodes, whose node id is leased fresh).
	StateFile string
	// Window is how far ahead of the newest id the persisted mark is kept;
	// a restart within Window waits at most that long. Default 2s.
	Window time.Duration
	// MaxWait bounds how long New waits for the clock to pass the persisted
	// mark before it gives up with ErrClockBehind. Default 30s.
	MaxWait time.Duration
	// Now is the wall clock (tests replace it). Default time.Now.
	Now func() time.Time
}

// Generator mints ids for one node. It is safe for concurrent use.
type Generator struct {
	node *snowflake.Node
	id   int64
	opts GeneratorOptions

	mu   sync.Mutex
	mark int64 // persisted high-water mark, ms since Epoch; every issued id is ≤ it
}

// NewGenerator returns a generator for node. With a state file it first waits
// until the wall clock is past the persisted high-water mark (clock rollback
// guard) and fails with ErrClockBehind when that would take longer than MaxWait.
func NewGenerator(node int64, opts GeneratorOptions) (*Generator, error) {
	if node < MinClinicNode || node > MaxNode {
		return nil, fmt.Errorf("%w: %d (want %d..%d)", ErrNodeRange, node, MinClinicNode, MaxNode)
	}
	if opts.Window <= 0 {
		opts.Window = 2 * time.Second
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Generator{id: node, opts: opts}
	if opts.StateFile != "" {
		mark, err := readMark(opts.StateFile)
		if err != nil {
			return nil, err
		}
		behind := time.Duration(mark-sinceEpoch(opts.Now())) * time.Millisecond
		if behind > opts.MaxWait {
			return nil, fmt.Errorf("%w by %s (state %s); fix the system clock", ErrClockBehind, behind.Round(time.Second), opts.StateFile)
		}
		for sinceEpoch(opts.Now()) <= mark {
			time.Sleep(time.Millisecond)
		}
		g.mark = mark
	}
	configure()
	n, err := snowflake.NewNode(node)
	if err != nil {
		return nil, fmt.Errorf("ids: new node %d: %w", node, err)
	}
	g.node = n
	return g, nil
}

// Node returns the node id this generator mints for.
func (g *Generator) Node() int64 { return g.id }

// Next returns a new id. With a state file it may write the file (about once
// per Window) before returning, so the id is covered by the persisted mark.
func (g *Generator) Next() (ID, error) {
	id := ID(g.node.Generate().Int64())
	if g.opts.StateFile == "" {
		return id, nil
	}
	t := int64(id) >> timeShift
	g.mu.Lock()
	defer g.mu.Unlock()
	if t >= g.mark {
		mark := t + g.opts.Window.Milliseconds()
		if err := writeMark(g.opts.StateFile, mark); err != nil {
			return 0, err
		}
		g.mark = mark
	}
	return id, nil
}

// MustNext is Next for generators without a state file, which cannot fail.
func (g *Generator) MustNext() ID {
	id, err := g.Next()
	if err != nil {
		panic(err)
	}
	return id
}

func sinceEpoch(t time.Time) int64 { return t.UnixMilli() - epochMillis }

func readMark(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ids: read state: %w", err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ids: state file %s is corrupt: %w", path, err)
	}
	return v, nil
}

func writeMark(path string, mark int64) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ids-*")
	if err != nil {
		return fmt.Errorf("ids: write state: %w", err)
	}
	_, werr := tmp.WriteString(strconv.FormatInt(mark, 10) + "\n")
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("ids: write state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("ids: write state: %w", err)
	}
	return nil
}
