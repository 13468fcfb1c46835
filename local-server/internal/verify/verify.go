// Package verify is sc-local's anti-entropy: it compares every record of
// the clinic (tombstones included) with the cloud's copy by hashes over
// buckets, looks inside the buckets that differ, reports each difference
// (kind, id, which side, what differs) and, asked to, repairs it through
// the replication path: the clinic's copy is re-sent as a new change, or the
// cloud's is applied here as the down path applies it (docs/verify.md).
package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scsync/scsync/local-server/internal/cloudapi"
	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/antientropy"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Sides of a difference.
const (
	SideClinic = "clinic" // the clinic's copy is wrong or missing
	SideCloud  = "cloud"  // the cloud's copy is wrong or missing
)

// Repairs.
const (
	RepairResend    = "resend"     // the clinic's copy goes up as a new change
	RepairTakeCloud = "take_cloud" // the cloud's copy is applied here
)

// Difference is one record the two sides disagree on.
type Difference struct {
	Kind wire.Kind `json:"kind"`
	ID   ids.ID    `json:"id,omitempty"`
	// SHA256 names the file of a difference of kind file.
	SHA256 string `json:"sha256,omitempty"`
	// Side is the side whose copy is wrong (or missing).
	Side string `json:"side"`
	// What lists what differs: missing, version, deleted, created_at,
	// content, conflict_of.
	What     string `json:"what"`
	Repair   string `json:"repair"`
	Repaired bool   `json:"repaired"`
	Error    string `json:"error,omitempty"`
}

// Report is what one run found.
type Report struct {
	At          time.Time    `json:"at"`
	Records     int          `json:"records"`
	CloudCount  int          `json:"cloud_records"`
	Files       int          `json:"files"`
	Buckets     int          `json:"differing_buckets"`
	InFlight    int          `json:"in_flight"`
	Differences []Difference `json:"differences"`
	Equal       bool         `json:"equal"`
	Repair      bool         `json:"repair"`
	Seconds     float64      `json:"seconds"`
}

// Cloud is what verify needs of the cloud API.
type Cloud interface {
	Verify(ctx context.Context, req antientropy.Request) (antientropy.Answer, error)
	Record(ctx context.Context, kind wire.Kind, id ids.ID) (cloudapi.CloudRecord, bool, error)
}

// Verifier runs anti-entropy for one clinic.
type Verifier struct {
	st     *store.Store
	cloud  Cloud
	log    *slog.Logger
	notify func(Report)
	runs   prometheus.Counter
	diffs  *prometheus.CounterVec
	last   prometheus.Gauge
	fcloud FileCloud
	fqueue FileQueue
	fdir   string
	fbatch int // files asked about in one request (filekey.MaxCheck)
}

// New returns a verifier; notify (may be nil) is told of every run that
// found differences. Metrics are registered on reg.
func New(st *store.Store, cloud Cloud, reg prometheus.Registerer, notify func(Report), log *slog.Logger) *Verifier {
	v := &Verifier{st: st, cloud: cloud, log: log, notify: notify,
		runs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "verify", Name: "runs_total",
			Help: "Anti-entropy runs."}),
		diffs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "scsync", Subsystem: "verify", Name: "differences_total",
			Help: "Records found different from the cloud, by the side that was wrong."}, []string{"side"}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "scsync", Subsystem: "verify", Name: "last_differences",
			Help: "Differences the last anti-entropy run found."}),
	}
	if reg != nil {
		reg.MustRegister(v.runs, v.diffs, v.last)
	}
	return v
}

// Run compares the clinic with the cloud and, with repair, repairs what
// differs.
func (v *Verifier) Run(ctx context.Context, repair bool) (Report, error) {
	start := time.Now()
	rep := Report{At: start.UTC(), Repair: repair}
	// The cloud scans its copy while this side scans its own: its bucket
	// hashes are asked for first, so the run takes the longer of the two
	// scans, not their sum.
	summary := make(chan cloudSummary, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		ans, err := v.cloud.Verify(sctx, antientropy.Request{Summary: true})
		summary <- cloudSummary{ans, err, time.Now()}
	}()
	// One scan: each record's digest is added into its bucket's sum and
	// dropped, so equal sides cost the bucket sums and nothing per record.
	var set antientropy.Set
	err := v.st.EachDigest(ctx, func(key, digest string) error {
		set.Add(key, digest)
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	scanned := time.Now()
	inFlight, err := v.st.InFlight(ctx)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	checkpoint, err := v.st.Checkpoint(ctx)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	sum := <-summary
	var ans antientropy.Answer
	var todo []int
	switch {
	case sum.err == nil && len(sum.ans.Buckets) == antientropy.Buckets:
		rep.CloudCount = sum.ans.Count
		todo = antientropy.Differing(set.Hashes(), sum.ans.Buckets)
	case sum.err == nil || olderCloud(sum.err):
		// A cloud of the previous release refuses the summary (or, had
		// it ignored the field, answered no hashes): it compares.
		if ans, err = v.cloud.Verify(ctx, antientropy.Request{Hashes: set.Hashes()}); err != nil {
			return rep, fmt.Errorf("verify: cloud: %w", err)
		}
		sum.at = time.Now()
		rep.CloudCount, todo = ans.Count, ans.Differing
	default:
		return rep, fmt.Errorf("verify: cloud: %w", sum.err)
	}
	rep.Records, rep.Buckets = set.Count(), len(todo)
	// An answer holds the records of at most MaxAnswerBuckets buckets:
	// the differing ones are asked for in batches of that size.
	for len(todo) > 0 {
		if len(ans.Answered) == 0 {
			if ans, err = v.cloud.Verify(ctx, antientropy.Request{Want: todo[:min(len(todo), antientropy.MaxAnswerBuckets)]}); err != nil {
				return rep, fmt.Errorf("verify: cloud: %w", err)
			}
			if len(ans.Answered) == 0 {
				return rep, fmt.Errorf("verify: cloud: no records for buckets %v", todo[:min(len(todo), 8)])
			}
		}
		if err := v.compare(ctx, &rep, ans, inFlight, checkpoint, repair); err != nil {
			return rep, err
		}
		todo = slices.DeleteFunc(todo, func(b int) bool { return slices.Contains(ans.Answered, b) })
		ans = antientropy.Answer{}
	}
	if v.fqueue != nil {
		if err := v.sweepFiles(ctx, &rep, repair); err != nil {
			return rep, err
		}
	}
	rep.Equal = len(rep.Differences) == 0
	rep.Seconds = time.Since(start).Seconds()
	v.runs.Inc()
	v.last.Set(float64(len(rep.Differences)))
	for _, d := range rep.Differences {
		v.diffs.WithLabelValues(d.Side).Inc()
	}
	if !rep.Equal {
		v.log.Warn("clinic and cloud differ", "differences", len(rep.Differences), "buckets", rep.Buckets, "repair", repair)
		if v.notify != nil {
			v.notify(rep)
		}
	} else {
		// Where the time went: this side's scan, the cloud's answer
		// (its own scan, at the same time), the rest (files).
		v.log.Info("clinic and cloud verified equal", "records", rep.Records, "seconds", rep.Seconds,
			"scan_seconds", scanned.Sub(start).Seconds(), "cloud_seconds", sum.at.Sub(start).Seconds())
	}
	return rep, nil
}

// cloudSummary is the cloud's answer to the summary asked for at the
// start of a run, and when it came.
type cloudSummary struct {
	ans antientropy.Answer
	err error
	at  time.Time
}

// olderCloud tells whether err is a cloud's refusal of a request it does
// not know (a release before the summary request decodes strictly).
func olderCloud(err error) bool {
	var ae *cloudapi.Error
	return errors.As(err, &ae) && ae.Status == http.StatusBadRequest
}

// compare looks inside the buckets of one answer: the clinic's digests of
// those buckets (a second scan, keeping only them) against the cloud's.
func (v *Verifier) compare(ctx context.Context, rep *Report, ans antientropy.Answer, inFlight map[string]bool, checkpoint int64, repair bool) error {
	in := antientropy.Wanted(ans.Answered)
	mine := map[string]string{}
	err := v.st.EachDigest(ctx, func(key, digest string) error {
		if in(key) {
			mine[key] = digest
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	keys := map[string]bool{}
	for k := range mine {
		keys[k] = true
	}
	for k := range ans.Records {
		if in(k) {
			keys[k] = true
		}
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if inFlight[k] {
			rep.InFlight++
			continue
		}
		ld, inLocal := mine[k]
		ce, inCloud := ans.Records[k]
		if inCloud && ce.CloudSeq > checkpoint {
			rep.InFlight++ // a cloud change still on its way down
			continue
		}
		if inLocal && inCloud && ld == ce.Digest {
			continue
		}
		diff, err := v.describe(ctx, k, inLocal, inCloud, ce)
		if err != nil {
			return err
		}
		if repair {
			v.repair(ctx, &diff)
		}
		rep.Differences = append(rep.Differences, diff)
	}
	return nil
}

// describe says which side is wrong and what differs.
func (v *Verifier) describe(ctx context.Context, key string, inLocal, inCloud bool, ce antientropy.Entry) (Difference, error) {
	kindS, idS, _ := strings.Cut(key, "/")
	id, err := ids.Parse(idS)
	if err != nil {
		return Difference{}, fmt.Errorf("verify: key %q: %w", key, err)
	}
	d := Difference{Kind: wire.Kind(kindS), ID: id}
	switch {
	case !inCloud:
		d.Side, d.What, d.Repair = SideCloud, "missing", RepairResend
		return d, nil
	case !inLocal:
		d.Side, d.What, d.Repair = SideClinic, "missing", RepairTakeCloud
		return d, nil
	}
	// The cloud's change log says what its row should hold: a row that
	// drifted from it is the wrong one; otherwise the clinic's is.
	d.Side, d.Repair = SideClinic, RepairTakeCloud
	if ce.Log != "" && ce.Log != ce.Digest {
		d.Side, d.Repair = SideCloud, RepairResend
	}
	lr, err := v.st.Get(ctx, d.Kind, d.ID)
	if err != nil {
		return d, fmt.Errorf("verify: %s: %w", key, err)
	}
	cr, ok, err := v.cloud.Record(ctx, d.Kind, d.ID)
	if err != nil || !ok {
		return d, fmt.Errorf("verify: cloud %s (found %v): %w", key, ok, err)
	}
	m := store.RecordMeta(lr)
	var what []string
	if m.SyncState == store.StateExcluded {
		if m.CloudVersion != cr.Version {
			what = append(what, fmt.Sprintf("version %s≠%s", m.CloudVersion, cr.Version))
		}
	} else if m.Version != cr.Version {
		what = append(what, fmt.Sprintf("version %s≠%s", m.Version, cr.Version))
	}
	if m.Deleted != cr.Deleted && m.SyncState != store.StateExcluded {
		what = append(what, fmt.Sprintf("deleted %v≠%v", m.Deleted, cr.Deleted))
	}
	if m.CreatedAt.UnixMilli() != cr.CreatedAt.UnixMilli() {
		what = append(what, "created_at")
	}
	if m.ConflictOf != cr.ConflictOf {
		what = append(what, "conflict_of")
	}
	if c, err := records.Decode(d.Kind, cr.Data); err == nil && !cr.Unsynced {
		a, _ := json.Marshal(store.RecordContent(lr))
		b, _ := json.Marshal(c)
		if string(a) != string(b) {
			if m.Deleted || cr.Deleted {
				what = append(what, "tombstone content")
			} else {
				what = append(what, "content")
			}
		}
	}
	d.What = strings.Join(what, ", ")
	if d.What == "" {
		d.What = "digest"
	}
	return d, nil
}

// repair sends the right copy the way replication would.
func (v *Verifier) repair(ctx context.Context, d *Difference) {
	var err error
	switch d.Repair {
	case RepairResend:
		cr, ok, gerr := v.cloud.Record(ctx, d.Kind, d.ID)
		if gerr != nil {
			err = gerr
			break
		}
		if !ok {
			cr.Version = version.V{} // the cloud has no such record
		}
		err = v.st.Resend(ctx, d.Kind, d.ID, cr.Version)
	case RepairTakeCloud:
		cr, ok, gerr := v.cloud.Record(ctx, d.Kind, d.ID)
		if gerr != nil || !ok {
			err = fmt.Errorf("cloud copy (found %v): %w", ok, gerr)
			break
		}
		e := wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeApplied, Clinic: v.st.Clinic(), Origin: cr.Origin,
			ChangeID: cr.LastChangeID, Kind: d.Kind, RecordID: d.ID, NewVersion: cr.Version, Deleted: cr.Deleted,
			CloudSeq: cr.CloudSeq, At: cr.CreatedAt, Payload: cr.Data, ConflictOf: cr.ConflictOf, Unsync: cr.Unsynced}
		if cr.Conflict {
			e.Conflict = wire.ResolvedKeepBoth
		}
		err = v.st.TakeCloud(ctx, e, cr.CreatedAt)
	}
	if err != nil {
		d.Error = err.Error()
		v.log.Error("verify repair failed", "kind", d.Kind, "id", d.ID, "repair", d.Repair, "err", err)
		return
	}
	d.Repaired = true
}
