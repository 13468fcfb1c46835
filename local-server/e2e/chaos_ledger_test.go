package e2e

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// tagDeleted stands for a delete in a record's history of writes.
const tagDeleted = "<deleted>"

// write is one change to a record the API acknowledged: the version the
// server gave it and the content's tag (unique per write) or tagDeleted.
type write struct {
	version version.V
	tag     string
}

// entry is what the soak knows about one record it asked to create.
type entry struct {
	kind   wire.Kind
	clinic int
	origin string // "clinic" or "cloud": the only side that changes it
	marker string // client-supplied, unique, never changes
	id     string // "" while the create's outcome is unknown
	// acked are the acknowledged writes (create included); doubt the tags
	// of writes whose answer never came (the server may have applied them).
	acked []write
	doubt map[string]bool
	// unsync: "" none, "acked", or "doubt".
	unsync string
	// sha is the file the image was given (images only).
	sha string
}

// fencedSave is one save the server accepted inside a fenced session.
type fencedSave struct {
	holder  string
	fence   int64
	version version.V
}

// fileEntry is a file the soak handed over: up (clinic import → S3) or
// down (uploaded in the cloud for a cloud image → clinic).
type fileEntry struct {
	clinic int
	sha    string
	size   int
	up     bool
	image  *entry
}

// ledger is the soak's record of everything the system acknowledged, kept
// to compare with what both sides hold once everything has healed.
type ledger struct {
	mu       sync.Mutex
	entries  []*entry
	byMarker map[string]*entry
	sessions map[string][]heldSession // per record (kind/id): sessions with accepted saves
	saves    map[string][]fencedSave  // per record: every accepted fenced save
	files    []fileEntry
	ops      map[string]int // operation outcomes, for the summary
	next     int
}

func newLedger() *ledger {
	return &ledger{byMarker: map[string]*entry{}, sessions: map[string][]heldSession{},
		saves: map[string][]fencedSave{}, ops: map[string]int{}}
}

func (l *ledger) count(what string) {
	l.mu.Lock()
	l.ops[what]++
	l.mu.Unlock()
}

// unique returns a new string for a marker or a tag.
func (l *ledger) unique(prefix string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	return fmt.Sprintf("%s-%d", prefix, l.next)
}

func (l *ledger) add(e *entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.doubt == nil {
		e.doubt = map[string]bool{}
	}
	l.entries = append(l.entries, e)
	l.byMarker[e.marker] = e
}

// ack records an acknowledged write; v is the version the server answered.
func (l *ledger) ack(e *entry, v, tag string) (version.V, error) {
	pv, err := version.Parse(v)
	if err != nil {
		return pv, fmt.Errorf("version %q: %w", v, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e.acked = append(e.acked, write{version: pv, tag: tag})
	return pv, nil
}

func (l *ledger) doubtful(e *entry, tag string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.doubt[tag] = true
}

func (l *ledger) setID(e *entry, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.id = id
}

func (l *ledger) setUnsync(e *entry, state string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.unsync = state
}

func (l *ledger) fenced(e *entry, s fencedSave) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := string(e.kind) + "/" + e.id
	l.saves[k] = append(l.saves[k], s)
}

func (l *ledger) held(e *entry, h heldSession) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := string(e.kind) + "/" + e.id
	l.sessions[k] = append(l.sessions[k], h)
}

func (l *ledger) file(f fileEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.files = append(l.files, f)
}

// last is e's acknowledged write with the highest version (the servers
// number a record's versions in the order they accept its writes).
func (e *entry) last() (write, bool) {
	if len(e.acked) == 0 {
		return write{}, false
	}
	w := e.acked[0]
	for _, x := range e.acked[1:] {
		if w.version.Less(x.version) {
			w = x
		}
	}
	return w, true
}

// held is one side's copy of a record, reduced to what the ledger checks.
type heldCopy struct {
	id, marker, tag, syncState, sha string
	version                         version.V
	deleted                         bool
}

// judge compares one side's copy of e (nil: the side has none) with the
// ledger and returns what is wrong, or "". sideName is "clinic" or "cloud".
func (e *entry) judge(sideName string, got *heldCopy) string {
	lw, hasAck := e.last()
	if got == nil {
		if hasAck {
			return fmt.Sprintf("lost: acknowledged at %s but missing on the %s", lw.version, sideName)
		}
		return ""
	}
	if hasAck && got.id != e.id {
		return fmt.Sprintf("the %s holds id %s, the create answered %s", sideName, got.id, e.id)
	}
	tag := got.tag
	if got.deleted {
		tag = tagDeleted
	}
	// Un-sync: the cloud holds a tombstone, the clinic its copy, excluded.
	switch {
	case e.unsync == "acked" && sideName == "cloud":
		if !got.deleted {
			return "un-synced but live in the cloud"
		}
		return ""
	case e.unsync == "acked" && (got.deleted || got.syncState != "excluded"):
		return fmt.Sprintf("un-synced but the clinic's copy is deleted=%v sync_state=%s", got.deleted, got.syncState)
	case e.unsync == "doubt" && sideName == "cloud" && got.deleted:
		return ""
	}
	if e.kind == wire.KindImage {
		// An image's version moves when its file is imported; check the file.
		if got.deleted {
			return "image deleted"
		}
		if e.sha != "" && got.sha != e.sha {
			return fmt.Sprintf("image names file %q, want %s", got.sha, e.sha)
		}
		return ""
	}
	switch {
	case !hasAck:
		if !e.doubt[tag] {
			return fmt.Sprintf("content %q at %s was never written", tag, got.version)
		}
	case got.version.Less(lw.version):
		return fmt.Sprintf("lost: the %s holds %s (%q), the last acknowledged write is %s (%q)", sideName, got.version, tag, lw.version, lw.tag)
	case got.version == lw.version:
		if tag != lw.tag {
			return fmt.Sprintf("the %s holds %q at %s, acknowledged %q", sideName, tag, got.version, lw.tag)
		}
	default:
		// A newer version is fine with the last acknowledged content (the
		// cloud may renumber a version) or an unanswered write's.
		if tag != lw.tag && !e.doubt[tag] {
			return fmt.Sprintf("the %s holds %q at %s, after the last acknowledged %s (%q), and no unanswered write made it",
				sideName, tag, got.version, lw.version, lw.tag)
		}
	}
	return ""
}

// overlaps checks the fenced sessions of every record: no two holders'
// sessions with accepted saves overlap, fencing tokens grow with the time
// sessions opened, and in the servers' order of accepted saves (versions)
// fences never go down. It returns the problems and how many sessions and
// saves it checked.
func (l *ledger) overlaps() (problems []string, sessions, saves int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, held := range l.sessions {
		sort.Slice(held, func(i, j int) bool { return held[i].opened.Before(held[j].opened) })
		sessions += len(held)
		for i := 1; i < len(held); i++ {
			a, b := held[i-1], held[i]
			if b.opened.Before(a.lastSave) && a.holder != b.holder {
				problems = append(problems, fmt.Sprintf("%s: overlapping sessions with accepted saves: %s (fence %d) [%s, %s] and %s (fence %d) [%s, %s]",
					k, a.holder, a.fence, a.opened.Format(time.StampMicro), a.lastSave.Format(time.StampMicro),
					b.holder, b.fence, b.opened.Format(time.StampMicro), b.lastSave.Format(time.StampMicro)))
			}
			if b.fence <= a.fence {
				problems = append(problems, fmt.Sprintf("%s: fencing token went from %d (%s) to %d (%s)", k, a.fence, a.holder, b.fence, b.holder))
			}
		}
	}
	for k, sv := range l.saves {
		sort.Slice(sv, func(i, j int) bool { return sv[i].version.Less(sv[j].version) })
		saves += len(sv)
		for i := 1; i < len(sv); i++ {
			if sv[i].fence < sv[i-1].fence {
				problems = append(problems, fmt.Sprintf("%s: save %s (fence %d, %s) accepted after %s (fence %d, %s)",
					k, sv[i].version, sv[i].fence, sv[i].holder, sv[i-1].version, sv[i-1].fence, sv[i-1].holder))
			}
		}
	}
	return problems, sessions, saves
}

// summary lists the operation outcomes, sorted.
func (l *ledger) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.ops))
	total := 0
	for k, n := range l.ops {
		keys = append(keys, k)
		if strings.HasSuffix(k, " ok") {
			total += n
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d operations acknowledged; outcomes:", total)
	for _, k := range keys {
		fmt.Fprintf(&b, "\n    %-40s %6d", k, l.ops[k])
	}
	return b.String()
}
