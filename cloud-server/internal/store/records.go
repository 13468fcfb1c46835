package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/antientropy"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/rowscan"
	"github.com/scsync/scsync/shared/syncrules"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Edit is a change made in the cloud (through the API).
type Edit struct {
	Kind wire.Kind
	ID   ids.ID // the record; for a create, its new id
	// Create makes a new record at version 1.0.
	Create bool
	// Base, when set, must be the current version (optimistic check).
	Base *version.V
	// Content is the new content; nil with Delete.
	Content records.Content
	Delete  bool
	// ChangeID identifies the change (a fresh Snowflake id).
	ChangeID ids.ID
	// Session is the edit session saving (empty: a one-save session). A
	// further save in the session that saved last bumps B instead of A.
	Session string
	// Fence is the session's fencing token (0: none); a token lower than
	// the record's last accepted one is refused with ErrStaleFence.
	Fence int64
	// Unfenced marks a save made with the lock service unreachable.
	Unfenced bool
	// SessionVersion is the record's version when the session opened: an
	// unfenced save over a change that came after it collides.
	SessionVersion version.V
	// Unsync (with Delete) takes the record out of the cloud only: the
	// clinic keeps its copy, excluded from sync (M7).
	Unsync bool
}

// Save writes a change made in the cloud (origin cloud) with its change log
// entry and outbox row, under the clinic's lock, in a group commit with the
// clinic's other saves waiting on this node (commit.go). ctx's save hook
// (WithSaveHook), if any, runs in the same transaction.
func (s *Store) Save(ctx context.Context, clinic ids.ID, ed Edit) (Record, error) {
	k, err := opsFor(ed.Kind)
	if err != nil {
		return nil, err
	}
	refs := []records.Ref{{Kind: ed.Kind, ID: ed.ID}}
	if ed.Content != nil {
		refs = append(refs, ed.Content.Refs()...)
	}
	var out Record
	err = s.inClinicSave(ctx, clinic, refs, func(ct *clinicTx) error {
		out = nil
		rec, exists, err := ct.load(k, ed.ID)
		if err != nil {
			return err
		}
		m := rec.meta()
		d := syncrules.DecideSave(stateOf(m, exists), syncrules.Save{Create: ed.Create, Delete: ed.Delete, Base: ed.Base,
			Session: ed.Session, SessionVersion: ed.SessionVersion, Fence: ed.Fence, Unfenced: ed.Unfenced})
		switch {
		case errors.Is(d.Err, syncrules.ErrExists):
			return ErrExists
		case errors.Is(d.Err, syncrules.ErrNotFound):
			return ErrNotFound
		case errors.Is(d.Err, syncrules.ErrVersionConflict):
			return fmt.Errorf("%w: current version is %s, not %s", ErrVersionConflict, m.Version, *ed.Base)
		case errors.Is(d.Err, syncrules.ErrStaleFence):
			return fmt.Errorf("%w: token %d, the record was saved under %d", ErrStaleFence, ed.Fence, m.Fence)
		}
		// An unfenced save over a clinic change that came after its
		// session opened goes through the clinic's policy (M13).
		var res syncrules.Resolution
		if d.Collides {
			res = syncrules.ResolveCloudCollision(ct.c.ConflictPolicy)
			if res.Err != nil {
				return fmt.Errorf("%w: the record changed in the clinic (now %s) since this session opened at %s",
					ErrCollision, m.Version, ed.SessionVersion)
			}
			if res.CopyCurrent && !m.Deleted {
				if err := ct.conflictCopy(k, ed.Kind, ed.ID, rec.content(), Person{}); err != nil {
					return err
				}
			}
		}
		base := d.Base
		if ed.Create {
			base = version.V{}
		}
		m.Version = d.Version
		m.EditSession = ed.Session
		m.Fence = d.Fence
		m.Unfenced = ed.Unfenced
		if ed.Content != nil {
			var had []records.Ref
			if exists {
				had = rec.content().Refs()
			}
			if ref, missing, err := ct.missingRef(ed.Content, true, had); err != nil {
				return err
			} else if missing {
				return fmt.Errorf("%w: %s %s", ErrMissingRef, ref.Kind, ref.ID)
			}
			rec.setContent(ed.Content)
		}
		m.Kind = ed.Kind
		m.Deleted = ed.Delete
		m.Origin = string(wire.OriginCloud)
		m.Conflict = res.Flag
		m.LocalVersion = version.V{}
		m.LastChangeID = ed.ChangeID
		now := Now()
		if ed.Create {
			m.CreatedAt = now
		}
		if err := ct.acceptChange(rec, exists, base, now, res.Conflict, ed.Unsync, PersonOf(ctx)); err != nil {
			return err
		}
		if err := saveHook(ctx, ct.tx, rec); err != nil {
			return err
		}
		out = rec
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: save %s: %w", ed.Kind, err)
	}
	return out, nil
}

// Get returns one record of the clinic (tombstones included).
func (s *Store) Get(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) (Record, error) {
	k, err := opsFor(kind)
	if err != nil {
		return nil, err
	}
	rec := k.newRow()
	err = s.db.WithContext(ctx).Take(rec, "clinic_id = ? AND id = ?", clinic, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	rec.meta().Kind = kind
	return rec, nil
}

// ListQuery pages through a clinic's records.
type ListQuery struct {
	UpdatedSince time.Time
	After        ids.ID // id of the last record of the previous page
	Before       ids.ID // when set, only ids up to it (inclusive)
	Limit        int
	WithDeleted  bool
	// Parent, when set, keeps the records of that parent (studies of a
	// patient, images of a study…).
	Parent ids.ID
	// ConflictOnly keeps records flagged by a keep-both conflict.
	ConflictOnly bool
	// RetentionState, when set, keeps the records retention marked so
	// (backed-up, or deleted: then tombstones are included).
	RetentionState string
	// Columns, when set, are the only columns read (the rest are left
	// zero): a scan of every row reads what it needs.
	Columns []string
}

// List returns a page of the clinic's records of one kind, in id order.
func (s *Store) List(ctx context.Context, clinic ids.ID, kind wire.Kind, q ListQuery) ([]Record, error) {
	k, err := opsFor(kind)
	if err != nil {
		return nil, err
	}
	db := s.db.WithContext(ctx).Where("clinic_id = ? AND id > ?", clinic, q.After)
	if q.Before != 0 {
		db = db.Where("id <= ?", q.Before)
	}
	if !q.UpdatedSince.IsZero() {
		db = db.Where("updated_at >= ?", q.UpdatedSince)
	}
	if !q.WithDeleted && q.RetentionState != RetentionDeleted {
		db = db.Where("NOT deleted")
	}
	if q.ConflictOnly {
		db = db.Where("conflict")
	}
	if q.RetentionState != "" {
		db = db.Where("retention_state = ?", q.RetentionState)
	}
	if q.Parent != 0 {
		if k.spec.ParentField == "" {
			return nil, fmt.Errorf("%w: %s has no parent", records.ErrInvalid, kind)
		}
		db = db.Where(k.spec.ParentField+" = ?", q.Parent)
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	if q.Columns != nil {
		db = db.Select(q.Columns)
	}
	return k.find(db.Order("id").Limit(q.Limit))
}

// Digest returns, for every record of the clinic (tombstones included), a
// hash of what both sides must agree on: version, deleted, conflict marks,
// creation time and content (a tombstone's too). Keys are "kind/id". Tests
// and the chaos soak compare it with the clinic's; anti-entropy uses
// EachDigest, which holds no map.
func (s *Store) Digest(ctx context.Context, clinic ids.ID) (map[string]string, error) {
	out := map[string]string{}
	err := s.EachDigest(ctx, clinic, func(key, digest string, _ Record) error {
		out[key] = digest
		return nil
	})
	return out, err
}

// EachDigest calls fn with every record of the clinic (tombstones
// included), with its key ("kind/id") and digest (records.Digest; an
// un-sync tombstone's content is not compared). It reads a page of rows at
// a time. The scan is CPU work (decoding rows, digesting them), so each
// kind's ids are cut into ranges that digestWorkers goroutines scan at
// once, each on its own connection; the calls of fn are serialized but come
// in no particular order (anti-entropy adds them into order-free sums).
func (s *Store) EachDigest(ctx context.Context, clinic ids.ID, fn func(key, digest string, r Record) error) error {
	type span struct {
		kind   wire.Kind
		lo, hi ids.ID // the ids in (lo, hi]
	}
	var spans []span
	for _, spec := range records.Kinds {
		k, err := opsFor(spec.Kind)
		if err != nil {
			return err
		}
		var b struct{ Lo, Hi *int64 }
		if err := s.db.WithContext(ctx).Model(k.newRow()).Select("min(id) AS lo, max(id) AS hi").
			Where("clinic_id = ?", clinic).Scan(&b).Error; err != nil {
			return err
		}
		if b.Lo == nil || b.Hi == nil {
			continue
		}
		for _, r := range rowscan.Split(ids.ID(*b.Lo)-1, ids.ID(*b.Hi), digestRanges) {
			spans = append(spans, span{spec.Kind, r[0], r[1]})
		}
	}
	var mu sync.Mutex
	return rowscan.Parallel(ctx, digestWorkers(), spans, func(ctx context.Context, sp span) error {
		k, err := opsFor(sp.kind)
		if err != nil {
			return err
		}
		cols, err := rowscan.Columns(s.db, k.newRow(), "Data", digestMeta...)
		if err != nil {
			return err
		}
		fetch := func(after ids.ID, limit int) ([]Record, error) {
			return s.List(ctx, clinic, sp.kind, ListQuery{After: max(after, sp.lo), Before: sp.hi, Limit: limit, WithDeleted: true, Columns: cols})
		}
		return rowscan.Walk(ctx, rowscan.PageSize, fetch, func(r Record) ids.ID { return r.meta().ID }, func(r Record) error {
			m := r.meta()
			c := r.content()
			if m.Unsynced {
				c = nil // the clinic keeps its own copy
			}
			key, digest := string(sp.kind)+"/"+m.ID.String(), records.Digest(m.Version, m.Deleted, m.ConflictOf, m.CreatedAt, c)
			mu.Lock()
			defer mu.Unlock()
			return fn(key, digest, r)
		})
	})
}

// digestMeta are the metadata columns EachDigest reads besides the
// content (rowscan.Columns): what a digest covers and what decides it.
var digestMeta = []string{"clinic_id", "id", "version", "deleted", "conflict_of", "created_at", "unsynced", "cloud_seq"}

// digestRanges is how many id ranges EachDigest cuts each kind into, so
// that uneven ranges still share the work; digestWorkers how many it scans
// at once: the node's cores, at least 2 (PostgreSQL works beside it) and at
// most 4 (a verify must not take the pool from the node's other work).
const digestRanges = 16

func digestWorkers() int { return min(4, max(2, runtime.GOMAXPROCS(0))) }

// Versions lists the kept versions of a record (every accepted change),
// oldest first.
func (s *Store) Versions(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID) ([]Change, error) {
	var chs []Change
	err := s.db.WithContext(ctx).Where("clinic_id = ? AND kind = ? AND record_id = ?", clinic, kind, id).Order("cloud_seq").Find(&chs).Error
	return chs, err
}

// VersionContent returns the content a record had at version v.
func (s *Store) VersionContent(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, v version.V) (records.Content, error) {
	var ch Change
	err := s.db.WithContext(ctx).Where("clinic_id = ? AND kind = ? AND record_id = ? AND new_version = ?", clinic, kind, id, v).
		Order("cloud_seq DESC").Take(&ch).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if ch.Deleted {
		return nil, fmt.Errorf("%w: version %s is a tombstone", ErrNotFound, v)
	}
	return records.Decode(kind, []byte(ch.Payload))
}

// Verify answers a clinic's anti-entropy request (docs/verify.md). Asked
// for a summary it hashes the clinic's records here in one scan and
// returns the count and its hashes. With the clinic's bucket hashes it hashes the clinic's records here in one
// scan (holding only the bucket sums), and returns its hashes, the buckets
// that differ and the records of the first antientropy.MaxAnswerBuckets of
// them (a second scan); with Want, the records of those buckets.
func (s *Store) Verify(ctx context.Context, clinic ids.ID, req antientropy.Request) (antientropy.Answer, error) {
	var out antientropy.Answer
	want := req.Want
	if req.Summary || req.Hashes != nil {
		var set antientropy.Set
		err := s.EachDigest(ctx, clinic, func(key, digest string, _ Record) error {
			set.Add(key, digest)
			return nil
		})
		if err != nil {
			return out, err
		}
		out.Count, out.Buckets = set.Count(), set.Hashes()
		if req.Summary {
			out.Answered, out.Records = []int{}, map[string]antientropy.Entry{}
			return out, nil
		}
		out.Differing = antientropy.Differing(req.Hashes, out.Buckets)
		want = out.Differing
	}
	want = want[:min(len(want), antientropy.MaxAnswerBuckets)]
	out.Answered = want
	if out.Answered == nil {
		out.Answered = []int{}
	}
	out.Records = map[string]antientropy.Entry{}
	if len(want) == 0 {
		return out, nil
	}
	recs, err := s.entries(ctx, clinic, antientropy.Wanted(want))
	if err != nil {
		return out, err
	}
	out.Records = recs
	return out, nil
}

// VerifySummary hashes the clinic's record digests into the first
// protocol's 256 buckets (GET /v1/clinics/{clinic}/verify, for clinics not
// yet upgraded). It holds every digest in memory.
func (s *Store) VerifySummary(ctx context.Context, clinic ids.ID) (antientropy.Summary, error) {
	d, err := s.Digest(ctx, clinic)
	if err != nil {
		return antientropy.Summary{}, err
	}
	return antientropy.Summary{Count: len(d), Buckets: antientropy.LegacyHashes(d)}, nil
}

// VerifyBucket returns the records of one of the first protocol's buckets.
func (s *Store) VerifyBucket(ctx context.Context, clinic ids.ID, bucket int) (antientropy.Detail, error) {
	recs, err := s.entries(ctx, clinic, func(key string) bool { return antientropy.LegacyBucket(key) == bucket })
	return antientropy.Detail{Bucket: bucket, Records: recs}, err
}

// entries returns the records whose key is in, with their digests and the
// digest their last accepted change says they should have: a row edited
// outside the replication path no longer matches its change log. The last
// changes are read a batch of records at a time (changes_record index).
func (s *Store) entries(ctx context.Context, clinic ids.ID, in func(key string) bool) (map[string]antientropy.Entry, error) {
	// What the log digest needs of a row, copied out of its page (a
	// pointer into the page would keep the whole page alive).
	type row struct {
		id      ids.ID
		created time.Time
		content records.Content
	}
	out := map[string]antientropy.Entry{}
	byKind := map[wire.Kind][]row{}
	err := s.EachDigest(ctx, clinic, func(key, digest string, r Record) error {
		if !in(key) {
			return nil
		}
		m := r.meta()
		out[key] = antientropy.Entry{Digest: digest, CloudSeq: m.CloudSeq}
		byKind[m.Kind] = append(byKind[m.Kind], row{id: m.ID, created: m.CreatedAt, content: r.content()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for kind, rs := range byKind {
		for batch := range slices.Chunk(rs, 1000) {
			idList := make([]ids.ID, len(batch))
			for i, r := range batch {
				idList[i] = r.id
			}
			var chs []Change
			err := s.db.WithContext(ctx).Raw("SELECT DISTINCT ON (record_id) * FROM changes WHERE clinic_id = ? AND kind = ? AND record_id IN ? "+
				"ORDER BY record_id, cloud_seq DESC", clinic, kind, idList).Scan(&chs).Error
			if err != nil {
				return nil, err
			}
			last := make(map[ids.ID]Change, len(chs))
			for _, ch := range chs {
				last[ch.RecordID] = ch
			}
			for _, r := range batch {
				ch, ok := last[r.id]
				if !ok {
					continue
				}
				var lc records.Content
				if ch.Payload != "" && !ch.Unsync {
					lc, _ = records.Decode(kind, []byte(ch.Payload))
				}
				if lc == nil && !ch.Unsync {
					lc = r.content // an older tombstone without its content
				}
				key := string(kind) + "/" + r.id.String()
				e := out[key]
				e.Log = records.Digest(ch.NewVersion, ch.Deleted, ch.ConflictOf, r.created, lc)
				out[key] = e
			}
		}
	}
	return out, nil
}
