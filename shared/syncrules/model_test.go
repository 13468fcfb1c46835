package syncrules_test

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/scsync/scsync/shared/syncrules"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// A model of one clinic and the cloud, in memory, that replicates only
// through this package's decisions: each side executes them the way its
// store does (local-server/internal/store, cloud-server/internal/store).
// rapid drives it with random interleavings of creates, edits, deletes,
// un-syncs and re-syncs, fenced and unfenced edit sessions on both sides,
// up messages redelivered and down messages reordered and redelivered,
// under each conflict policy; then it lets every message through and
// checks that the two sides converged, that no acknowledged save vanished
// without a visible conflict, and that versions follow M18.

// content is a record's content: a text, and the saves it incorporates
// (what the person who saved it had seen, plus the save itself).
type content struct {
	text string
	hist map[int]bool
}

func (c content) with(save int, text string) content {
	h := maps.Clone(c.hist)
	if h == nil {
		h = map[int]bool{}
	}
	h[save] = true
	return content{text: text, hist: h}
}

func union(a, b content) map[int]bool {
	h := maps.Clone(a.hist)
	if h == nil {
		h = map[int]bool{}
	}
	maps.Copy(h, b.hist)
	return h
}

// crec is a record in the cloud.
type crec struct {
	st         syncrules.Record
	c          content
	created    int
	conflictOf int
	flag       bool
	unsynced   bool
	origin     wire.Origin
}

// logEntry is an accepted change (the pull API and the down queue).
type logEntry struct {
	seq        int64
	changeID   int64
	rec        int
	base, new  version.V
	deleted    bool
	unsync     bool
	conflict   string
	conflictOf int
	origin     wire.Origin
	c          *content // nil: no payload (an un-sync)
	at         int
}

// lrec is a record in the clinic.
type lrec struct {
	exists, deleted bool
	version         version.V
	fence           int64
	session         string
	c               content
	created         int
	conflictOf      int
	pending         int64
	queued          bool
	excluded        bool // un-synced: kept here only
	cloudVersion    version.V
	state           string
	origin          wire.Origin
}

// upMsg is a change in the clinic's outbox / the up queue.
type upMsg struct {
	changeID  int64
	rec       int
	base, new version.V
	deleted   bool
	unsync    bool
	fence     int64
	unfenced  bool
	c         content
	at        int
}

type session struct {
	id       string
	cloud    bool
	rec      int
	opened   version.V
	seen     content // what the person edits on top of
	unfenced bool
	fence    int64
	saved    version.V // last save's version (zero: none)
}

type lockState struct {
	holder string
	token  int64
	saved  version.V
}

type world struct {
	policy string
	tick   int
	nextID int64

	cloud    map[int]*crec
	log      []logEntry
	seen     map[int64]bool // change ids the cloud accepted
	dropped  map[int]bool   // saves a conflict resolution overrode, visibly
	clinic   map[int]*lrec
	cp       int64
	outbox   []upMsg // every up message, in order
	upNext   int     // how many were delivered
	inFlight []int64 // down messages published, not delivered
	sessions map[string]*session
	locks    map[int]*lockState
	token    int64
	acked    map[int]bool // saves a side acknowledged (on a synced record)
	versions map[string][]version.V
	trace    []traceLine
	saveRec  map[int]int // the record each save was made on
}

// tracef notes what happened to record rec, for the failure message.
func (w *world) tracef(rec int, format string, a ...any) {
	w.trace = append(w.trace, traceLine{rec, fmt.Sprintf(format, a...)})
}

type traceLine struct {
	rec  int
	line string
}

// history is the trace of one record.
func (w *world) history(rec int) string {
	var b strings.Builder
	for _, l := range w.trace {
		if l.rec == rec {
			b.WriteString("\n  " + l.line)
		}
	}
	return b.String()
}

func newWorld(policy string) *world {
	return &world{policy: policy, cloud: map[int]*crec{}, seen: map[int64]bool{}, dropped: map[int]bool{},
		clinic: map[int]*lrec{}, sessions: map[string]*session{}, locks: map[int]*lockState{}, acked: map[int]bool{},
		versions: map[string][]version.V{}, saveRec: map[int]int{}}
}

func (w *world) id() int64 { w.nextID++; return w.nextID }
func (w *world) now() int  { w.tick++; return w.tick }

// noteVersion keeps each side's successive versions of a record (M18 check).
func (w *world) noteVersion(side string, rec int, v version.V) {
	k := side + "/" + strconv.Itoa(rec)
	if vs := w.versions[k]; len(vs) > 0 && vs[len(vs)-1] == v {
		return // unchanged (an acceptance of the version made here)
	}
	w.versions[k] = append(w.versions[k], v)
}

// ---- the clinic (local-server/internal/store) ----

func (w *world) clinicSave(t *rapid.T, rec int, s *session, del bool) bool {
	l := w.clinic[rec]
	if l == nil {
		return false
	}
	save := syncrules.Save{Delete: del}
	if s != nil {
		save.Session, save.SessionVersion, save.Fence, save.Unfenced = s.id, s.opened, s.fence, s.unfenced
	}
	d := syncrules.DecideSave(syncrules.Record{Exists: l.exists, Version: l.version, Deleted: l.deleted, Fence: l.fence, Session: l.session}, save)
	if d.Err != nil {
		return false
	}
	sid := int(w.id())
	seen := l.c
	if s != nil {
		seen = s.seen
	}
	c := seen.with(sid, "clinic-"+strconv.Itoa(sid))
	if del {
		c = l.c.with(sid, l.c.text) // a delete keeps the content as it is here
	}
	l.version, l.fence, l.deleted, l.c, l.origin = d.Version, d.Fence, del, c, wire.OriginLocal
	l.session = save.Session
	w.noteVersion("clinic", rec, l.version)
	if s != nil {
		s.seen, s.saved = c, d.Version
	}
	if l.excluded {
		return true // kept here: nothing goes to the cloud
	}
	w.acked[sid] = true
	w.saveRec[sid] = rec
	w.tracef(rec, "clinic save %d on %d: %s→%s session=%q unfenced=%v base=%s del=%v hist=%v", sid, rec, save.SessionVersion, d.Version, save.Session, save.Unfenced, d.Base, del, c.hist)
	base, at := d.Base, w.now()
	if !l.queued {
		base, at = version.V{}, l.created
	}
	cid := w.id()
	l.queued, l.pending, l.state = true, cid, "pending"
	w.outbox = append(w.outbox, upMsg{changeID: cid, rec: rec, base: base, new: d.Version, deleted: del,
		fence: save.Fence, unfenced: save.Unfenced, c: c, at: at})
	return true
}

func (w *world) clinicCreate() {
	rec := int(w.id())
	sid := int(w.id())
	now := w.now()
	c := content{}.with(sid, "clinic-"+strconv.Itoa(sid))
	w.clinic[rec] = &lrec{exists: true, version: version.First, c: c, created: now, origin: wire.OriginLocal}
	w.noteVersion("clinic", rec, version.First)
	w.acked[sid] = true
	cid := w.id()
	l := w.clinic[rec]
	l.queued, l.pending, l.state = true, cid, "pending"
	w.outbox = append(w.outbox, upMsg{changeID: cid, rec: rec, new: version.First, c: c, at: now})
}

func (w *world) clinicUnsync(rec int) {
	l := w.clinic[rec]
	if l == nil || l.deleted || l.excluded || !l.queued {
		return
	}
	prev := l.version
	l.version = l.version.NextSession()
	l.session = ""
	w.noteVersion("clinic", rec, l.version)
	cid := w.id()
	l.pending, l.state = cid, "pending"
	w.outbox = append(w.outbox, upMsg{changeID: cid, rec: rec, base: prev, new: l.version, deleted: true, unsync: true, at: w.now()})
}

func (w *world) clinicResync(rec int) {
	l := w.clinic[rec]
	if l == nil || !l.excluded || l.deleted {
		return
	}
	prev := l.cloudVersion
	top := l.version
	if top.Less(prev) {
		top = prev
	}
	l.version = top.NextSession()
	w.noteVersion("clinic", rec, l.version)
	l.excluded = false
	cid := w.id()
	l.pending, l.state = cid, "pending"
	w.outbox = append(w.outbox, upMsg{changeID: cid, rec: rec, base: prev, new: l.version, c: l.c, at: w.now()})
}

// applyDown mirrors Store.ApplyDown/applyOne for one envelope; false on a gap.
func (w *world) applyDown(e logEntry) bool {
	l := w.clinic[e.rec]
	loc := syncrules.Local{}
	if l != nil {
		loc = syncrules.Local{Exists: l.exists, Queued: l.queued, Version: l.version, Deleted: l.deleted, Origin: l.origin}
		if l.state == "pending" {
			loc.Pending = l.pending
		}
	}
	d := syncrules.DecideDown(loc, w.cp, syncrules.Applied{ChangeID: e.changeID, CloudSeq: e.seq, New: e.new, Deleted: e.deleted,
		Unsync: e.unsync, Conflict: e.conflict, ConflictOf: int64(e.conflictOf), Origin: e.origin})
	if d.Outcome != syncrules.Duplicate && d.Outcome != syncrules.Gap {
		w.tracef(e.rec, "down seq %d rec %d change %d %s del=%v unsync=%v conflict=%q: outcome %d own=%v", e.seq, e.rec, e.changeID, e.new, e.deleted, e.unsync, e.conflict, d.Outcome, d.Own)
	}
	switch d.Outcome {
	case syncrules.Duplicate:
		return true
	case syncrules.Gap:
		return false
	case syncrules.Skip:
		w.cp = e.seq
		return true
	}
	w.cp = e.seq
	if l == nil {
		if d.Outcome == syncrules.Unsync {
			return true
		}
		l = &lrec{}
		w.clinic[e.rec] = l
	}
	l.queued, l.cloudVersion = true, e.new
	switch d.Outcome {
	case syncrules.Unsync:
		l.version, l.session, l.excluded, l.pending, l.state = e.new, "", true, 0, "excluded"
		w.noteVersion("clinic", e.rec, l.version)
		return true
	case syncrules.AcceptAsSent:
		l.state, l.pending = "synced", 0
		return true
	}
	if !d.Own {
		l.session = ""
	}
	if !l.exists {
		l.exists, l.created = true, e.at
	}
	if e.c != nil {
		l.c = *e.c
	}
	if l.version != e.new {
		w.noteVersion("clinic", e.rec, e.new)
	}
	l.deleted, l.version, l.origin, l.conflictOf = e.deleted, e.new, e.origin, e.conflictOf
	l.pending, l.state = 0, "synced"
	if d.Conflicted {
		l.state = "conflict"
	}
	return true
}

// pull applies the cloud's log from the checkpoint (the pull API).
func (w *world) pull() {
	for int(w.cp) < len(w.log) {
		w.applyDown(w.log[w.cp])
	}
}

// ---- the cloud (cloud-server/internal/store) ----

func (w *world) accept(rec int, r *crec, base version.V, changeID int64, conflict string, unsync bool, at int) {
	r.unsynced = unsync && r.st.Deleted
	seq := int64(len(w.log) + 1)
	e := logEntry{seq: seq, changeID: changeID, rec: rec, base: base, new: r.st.Version, deleted: r.st.Deleted, unsync: r.unsynced,
		conflict: conflict, conflictOf: r.conflictOf, origin: r.origin, at: at}
	if !r.unsynced {
		c := r.c
		e.c = &c
	}
	w.log = append(w.log, e)
	w.inFlight = append(w.inFlight, seq)
	w.seen[changeID] = true
	w.noteVersion("cloud", rec, r.st.Version)
}

func (w *world) conflictCopy(of int, c content) {
	rec := int(w.id())
	now := w.now()
	r := &crec{st: syncrules.Record{Exists: true, Version: version.First}, c: c, created: now, conflictOf: of, flag: true, origin: wire.OriginCloud}
	w.cloud[rec] = r
	w.accept(rec, r, version.V{}, int64(rec), syncrules.KeepBoth, false, now)
}

// applyUp mirrors clinicTx.applyUp.
func (w *world) applyUp(m upMsg) {
	r := w.cloud[m.rec]
	var st syncrules.Record
	if r != nil {
		st = r.st
	}
	d := syncrules.DecideUp(st, syncrules.Change{Base: m.base, New: m.new, Deleted: m.deleted, Unsync: m.unsync,
		Fence: m.fence, Unfenced: m.unfenced, Known: w.seen[m.changeID]}, w.policy)
	w.tracef(m.rec, "up %d rec %d base %s new %s del=%v unsync=%v: %+v", m.changeID, m.rec, m.base, m.new, m.deleted, m.unsync, d)
	if d.Outcome == syncrules.Duplicate {
		return
	}
	exists := r != nil
	if r == nil {
		r = &crec{created: m.at}
		w.cloud[m.rec] = r
	}
	base := r.st.Version
	r.st.Exists, r.st.Fence, r.st.Session = true, d.Fence, ""
	r.st.Version, r.st.LocalVersion = d.Version, d.LocalVersion
	r.flag = d.Flag || (r.flag && !d.TakeChange)
	unsync := false
	switch {
	case d.TakeChange:
		for s := range r.c.hist {
			if d.Conflict != "" && !m.c.hist[s] {
				w.dropped[s] = true // overwritten by the clinic's change, visibly
			}
		}
		if m.deleted {
			r.c = content{text: r.c.text, hist: union(r.c, m.c)}
			if !exists {
				r.c = m.c
			}
		} else {
			r.c = m.c
		}
		r.st.Deleted, r.origin, unsync = m.deleted, wire.OriginLocal, m.unsync
	case d.Copy:
	default: // the clinic's change loses: its saves are overridden, visibly
		for s := range m.c.hist {
			if !r.c.hist[s] {
				w.dropped[s] = true
			}
		}
	}
	w.accept(m.rec, r, base, m.changeID, d.Conflict, unsync, m.at)
	if d.Copy {
		w.conflictCopy(m.rec, m.c)
	}
	_ = exists
}

func (w *world) cloudSave(rec int, s *session, del, unsync bool) bool {
	r := w.cloud[rec]
	if r == nil {
		return false
	}
	save := syncrules.Save{Delete: del}
	if s != nil {
		save.Session, save.SessionVersion, save.Fence, save.Unfenced = s.id, s.opened, s.fence, s.unfenced
	}
	d := syncrules.DecideSave(r.st, save)
	if d.Err != nil {
		return false
	}
	var res syncrules.Resolution
	if d.Collides {
		res = syncrules.ResolveCloudCollision(w.policy)
		if res.Err != nil {
			return false // refused: the person sees the clinic's content
		}
		if res.CopyCurrent && !r.st.Deleted {
			w.conflictCopy(rec, r.c)
		}
	}
	sid := int(w.id())
	seen := r.c
	if s != nil {
		seen = s.seen
	}
	c := seen.with(sid, "cloud-"+strconv.Itoa(sid))
	if del {
		c = r.c.with(sid, r.c.text)
	}
	if d.Collides && !res.CopyCurrent {
		for x := range r.c.hist {
			if !c.hist[x] {
				w.dropped[x] = true // cloud-wins over the clinic's change, visibly
			}
		}
	}
	if !unsync {
		w.acked[sid] = true // an un-sync is a sync choice, not content
	}
	w.saveRec[sid] = rec
	w.tracef(rec, "cloud save %d on %d: →%s session=%q unfenced=%v collides=%v del=%v unsync=%v hist=%v", sid, rec, d.Version, save.Session, save.Unfenced, d.Collides, del, unsync, c.hist)
	r.st.Version, r.st.Session, r.st.Fence, r.st.LocalVersion = d.Version, save.Session, d.Fence, version.V{}
	r.st.Deleted, r.c, r.origin, r.flag = del, c, wire.OriginCloud, res.Flag
	if s != nil {
		s.seen, s.saved = c, d.Version
	}
	w.accept(rec, r, d.Base, w.id(), res.Conflict, unsync, w.now())
	return true
}

func (w *world) cloudCreate() {
	rec := int(w.id())
	sid := int(w.id())
	now := w.now()
	r := &crec{st: syncrules.Record{Exists: true, Version: version.First}, c: content{}.with(sid, "cloud-"+strconv.Itoa(sid)),
		created: now, origin: wire.OriginCloud}
	w.cloud[rec] = r
	w.acked[sid] = true
	w.accept(rec, r, version.V{}, w.id(), "", false, now)
}

// ---- sessions and lockd ----

func (w *world) open(cloud bool, rec int, unfenced bool) {
	var v version.V
	var c content
	if cloud {
		r := w.cloud[rec]
		if r == nil || r.st.Deleted {
			return
		}
		v, c = r.st.Version, r.c
	} else {
		l := w.clinic[rec]
		if l == nil || l.deleted || !l.exists {
			return
		}
		v, c = l.version, l.c
	}
	for _, s := range w.sessions {
		if s.rec == rec && s.cloud == cloud {
			return // the server refuses a second session it knows of
		}
	}
	s := &session{id: "s" + strconv.FormatInt(w.id(), 10), cloud: cloud, rec: rec, opened: v, seen: c, unfenced: unfenced}
	if !unfenced {
		lk := w.locks[rec]
		if lk != nil && lk.holder != "" {
			return // locked
		}
		if lk != nil && v.Less(lk.saved) {
			return // not_synced
		}
		if lk == nil {
			lk = &lockState{}
			w.locks[rec] = lk
		}
		w.token++
		lk.holder, lk.token = s.id, w.token
		s.fence = w.token
	}
	w.sessions[s.id] = s
}

func (w *world) saveIn(t *rapid.T, s *session, del bool) {
	if !s.unfenced {
		if lk := w.locks[s.rec]; lk == nil || lk.holder != s.id {
			return // lock_lost
		}
	}
	if s.cloud {
		w.cloudSave(s.rec, s, del, false)
	} else {
		w.clinicSave(t, s.rec, s, del)
	}
}

func (w *world) close(s *session) {
	delete(w.sessions, s.id)
	if lk := w.locks[s.rec]; lk != nil && lk.holder == s.id {
		lk.holder = ""
		if !s.saved.IsZero() {
			lk.saved = s.saved
		}
	}
}

// ---- the network ----

func (w *world) deliverUp() {
	if w.upNext < len(w.outbox) {
		w.applyUp(w.outbox[w.upNext])
		w.upNext++
	}
}

func (w *world) deliverDown(i int) {
	seq := w.inFlight[i]
	w.inFlight = slices.Delete(w.inFlight, i, i+1)
	if !w.applyDown(w.log[seq-1]) {
		w.pull() // a gap: pull from the checkpoint
	}
}

func (w *world) settle() {
	for w.upNext < len(w.outbox) || len(w.inFlight) > 0 || int(w.cp) < len(w.log) {
		w.deliverUp()
		w.inFlight = nil
		w.pull()
	}
}

// ---- properties ----

func (w *world) check(t *rapid.T) {
	for id, r := range w.cloud {
		l := w.clinic[id]
		if l == nil {
			t.Fatalf("record %d: in the cloud (%s), not in the clinic", id, r.st.Version)
		}
		if l.created != r.created {
			t.Fatalf("record %d: created %d in the clinic, %d in the cloud", id, l.created, r.created)
		}
		if r.unsynced {
			if !l.excluded || l.cloudVersion != r.st.Version {
				t.Fatalf("record %d: un-synced in the cloud at %s; clinic excluded=%v cloud_version=%s", id, r.st.Version, l.excluded, l.cloudVersion)
			}
			continue
		}
		if l.version != r.st.Version || l.deleted != r.st.Deleted || l.c.text != r.c.text || l.conflictOf != r.conflictOf {
			t.Fatalf("record %d differs: clinic %s deleted=%v %q copy-of=%d, cloud %s deleted=%v %q copy-of=%d:%s",
				id, l.version, l.deleted, l.c.text, l.conflictOf, r.st.Version, r.st.Deleted, r.c.text, r.conflictOf, w.history(id))
		}
		if l.state == "pending" {
			t.Fatalf("record %d still pending after everything was delivered", id)
		}
	}
	for id, l := range w.clinic {
		if _, ok := w.cloud[id]; !ok && l.queued {
			t.Fatalf("record %d: sent up but not in the cloud", id)
		}
	}
	// No acknowledged save disappears without a visible conflict record.
	kept := map[int]bool{}
	for _, r := range w.cloud {
		maps.Copy(kept, r.c.hist)
	}
	for _, l := range w.clinic {
		maps.Copy(kept, l.c.hist)
	}
	for s := range w.acked {
		if !kept[s] && !w.dropped[s] {
			t.Fatalf("acknowledged save %d vanished without a conflict record; record %d:%s", s, w.saveRec[s], w.history(w.saveRec[s]))
		}
	}
	// M18: versions only move forward; a record starts at 1.0.
	for k, vs := range w.versions {
		for i := 1; i < len(vs); i++ {
			if !vs[i-1].Less(vs[i]) {
				t.Fatalf("%s: version went from %s to %s (%v)", k, vs[i-1], vs[i], vs)
			}
		}
	}
	for i := 1; i < len(w.log); i++ {
		if w.log[i].seq != w.log[i-1].seq+1 {
			t.Fatalf("cloud_seq %d follows %d", w.log[i].seq, w.log[i-1].seq)
		}
	}
}

func pick[V any](t *rapid.T, m map[int]V, label string) (int, bool) {
	if len(m) == 0 {
		return 0, false
	}
	keys := slices.Sorted(maps.Keys(m))
	return rapid.SampledFrom(keys).Draw(t, label), true
}

func (w *world) run(t *rapid.T, steps int) {
	for range steps {
		op := rapid.IntRange(0, 17).Draw(t, "op")
		switch op {
		case 0:
			w.clinicCreate()
		case 1:
			w.cloudCreate()
		case 2: // one-shot clinic edit
			if id, ok := pick(t, w.clinic, "rec"); ok {
				w.clinicSave(t, id, nil, false)
			}
		case 3: // one-shot cloud edit
			if id, ok := pick(t, w.cloud, "rec"); ok {
				w.cloudSave(id, nil, false, false)
			}
		case 4:
			if id, ok := pick(t, w.clinic, "rec"); ok {
				w.clinicSave(t, id, nil, true)
			}
		case 5:
			if id, ok := pick(t, w.cloud, "rec"); ok {
				w.cloudSave(id, nil, true, false)
			}
		case 6:
			if id, ok := pick(t, w.clinic, "rec"); ok {
				w.clinicUnsync(id)
			}
		case 7:
			if id, ok := pick(t, w.cloud, "rec"); ok {
				if r := w.cloud[id]; !r.st.Deleted {
					w.cloudSave(id, nil, true, true)
				}
			}
		case 8:
			if id, ok := pick(t, w.clinic, "rec"); ok {
				w.clinicResync(id)
			}
		case 9: // open a session on either side, fenced or "edit anyway"
			cloud := rapid.Bool().Draw(t, "cloud")
			var id int
			var ok bool
			if cloud {
				id, ok = pick(t, w.cloud, "rec")
			} else {
				id, ok = pick(t, w.clinic, "rec")
			}
			if ok {
				w.open(cloud, id, rapid.Bool().Draw(t, "unfenced"))
			}
		case 10, 11: // save in an open session
			if s := w.anySession(t); s != nil {
				w.saveIn(t, s, false)
			}
		case 12:
			if s := w.anySession(t); s != nil {
				w.close(s)
			}
		case 13: // a lock expires under its session
			if s := w.anySession(t); s != nil && !s.unfenced {
				if lk := w.locks[s.rec]; lk != nil && lk.holder == s.id {
					lk.holder = ""
				}
			}
		case 14, 15:
			w.deliverUp()
		case 16: // a down message, in any order
			if len(w.inFlight) > 0 {
				w.deliverDown(rapid.IntRange(0, len(w.inFlight)-1).Draw(t, "msg"))
			}
		case 17: // redelivery: an up message or a down message seen before
			if w.upNext > 0 && rapid.Bool().Draw(t, "up") {
				w.applyUp(w.outbox[rapid.IntRange(0, w.upNext-1).Draw(t, "old")])
			} else if w.cp > 0 {
				w.applyDown(w.log[rapid.Int64Range(1, w.cp).Draw(t, "seq")-1])
			}
		}
	}
}

func (w *world) anySession(t *rapid.T) *session {
	if len(w.sessions) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(w.sessions))
	return w.sessions[rapid.SampledFrom(ids).Draw(t, "session")]
}

// checks sets rapid's number of cases unless -rapid.checks was given.
func checks(t *testing.T, n int) {
	f := flag.Lookup("rapid.checks")
	if f == nil {
		return
	}
	set := false
	flag.Visit(func(g *flag.Flag) { set = set || g.Name == "rapid.checks" })
	if set || testing.Short() {
		return
	}
	if err := f.Value.Set(strconv.Itoa(n)); err != nil {
		t.Fatal(err)
	}
}

// TestClinicAndCloudConverge is the model check: thousands of random
// histories per policy.
func TestClinicAndCloudConverge(t *testing.T) {
	n := 3000
	if raceEnabled {
		n = 300
	}
	checks(t, n)
	for _, policy := range []string{syncrules.LocalWins, syncrules.CloudWins, syncrules.KeepBoth} {
		t.Run(policy, func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				w := newWorld(policy)
				w.run(t, rapid.IntRange(1, 60).Draw(t, "steps"))
				for _, s := range w.sessions {
					w.close(s)
				}
				w.settle()
				w.check(t)
			})
		})
	}
}
