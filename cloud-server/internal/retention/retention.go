// Package retention applies each clinic's old-data policy (M5): keep
// everything (the default), take dated records older than N days out of the
// cloud (an un-sync tombstone: the clinic keeps its copy, M6, M7), or keep
// them and move their files to cold storage, restored on request. The
// policy is set by the cloud admin; the job runs on every node, one node
// per clinic per round. See docs/retention.md.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/wire"
)

// Config of the retention job (sc-cloud's `retention:` section).
type Config struct {
	// Interval is how often the job applies the policies (default 1h; 0
	// disables the job, not the API).
	Interval time.Duration `yaml:"interval"`
	// Batch is how many records of one kind a query fetches (default 500).
	Batch int `yaml:"batch"`
	// RestoreHold is how long a restored record is left alone before its
	// policy applies to it again (default 720h).
	RestoreHold time.Duration `yaml:"restore_hold"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Interval: time.Hour, Batch: 500, RestoreHold: 30 * 24 * time.Hour}
}

// Validate names the first setting that is wrong.
func (c Config) Validate() error {
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, errors.New("retention.interval must not be negative"))
	}
	if c.Batch < 1 || c.Batch > 10000 {
		errs = append(errs, errors.New("retention.batch must be 1..10000"))
	}
	if c.RestoreHold < 0 {
		errs = append(errs, errors.New("retention.restore_hold must not be negative"))
	}
	return errors.Join(errs...)
}

// IDs mints the change ids of retention's un-sync tombstones.
type IDs interface {
	Next() (ids.ID, error)
}

// Service applies policies and serves the retention API.
type Service struct {
	cfg    Config
	st     *store.Store
	files  *files.Service
	ids    IDs
	notify func()
	log    *slog.Logger
	m      *metrics
}

// New returns the service. notify is called after tombstones were written
// (it wakes the outbox relay); reg, when not nil, receives the metrics.
func New(cfg Config, st *store.Store, fs *files.Service, gen IDs, notify func(), reg prometheus.Registerer, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if notify == nil {
		notify = func() {}
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, st: st, files: fs, ids: gen, notify: notify, log: log, m: m}, nil
}

// Run applies the policies every Interval until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if s.cfg.Interval <= 0 {
		return nil
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("retention run failed", "err", err)
			}
		}
	}
}

// RunOnce applies every clinic's policy that no other node applied within
// half an Interval (each clinic is claimed in the database, so nodes share
// the work instead of repeating it; every step is idempotent anyway).
func (s *Service) RunOnce(ctx context.Context) error {
	ps, err := s.st.RetentionPolicies(ctx)
	if err != nil {
		return fmt.Errorf("retention: policies: %w", err)
	}
	var errs []error
	for _, p := range ps {
		ok, err := s.st.ClaimRetentionRun(ctx, p.ClinicID, s.cfg.Interval/2)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue
		}
		res, err := s.Apply(ctx, p.ClinicID)
		msg := ""
		if err != nil {
			msg = err.Error()
			errs = append(errs, err)
			s.m.runs.WithLabelValues("error").Inc()
		} else {
			s.m.runs.WithLabelValues("ok").Inc()
		}
		if err := s.st.EndRetentionRun(context.WithoutCancel(ctx), p.ClinicID, msg); err != nil {
			errs = append(errs, err)
		}
		if res != (Result{}) {
			s.log.Info("retention applied", "clinic", p.ClinicID, "mode", p.Mode, "deleted", res.Deleted,
				"backed_up", res.BackedUp, "files_archived", res.FilesArchived, "skipped", res.Skipped)
		}
	}
	return errors.Join(errs...)
}

// Result counts what one Apply did.
type Result struct {
	Deleted       int `json:"deleted"`        // records taken out of the cloud
	BackedUp      int `json:"backed_up"`      // records marked backed-up
	FilesArchived int `json:"files_archived"` // records whose file is in cold storage now
	Skipped       int `json:"skipped"`        // candidates left for a later run
}

// Apply applies clinic's policy now: children of a study before the study,
// page by page. A record whose file cannot move yet (still uploading, or
// shared with a newer record) is skipped and tried again next run.
func (s *Service) Apply(ctx context.Context, clinic ids.ID) (Result, error) {
	var res Result
	p, err := s.st.Retention(ctx, clinic)
	if err != nil || p.Mode == store.RetentionKeep {
		return res, err
	}
	if p.Mode == store.RetentionBackup && !s.files.ColdStorage() {
		return res, fmt.Errorf("retention: clinic %s: %w", clinic, files.ErrNoColdStorage)
	}
	cutoff := time.Now().UTC().AddDate(0, 0, -p.AfterDays).Format(time.DateOnly)
	states := []string{""}
	if p.Mode == store.RetentionDelete {
		states = append(states, store.RetentionBackedUp)
	}
	reason := fmt.Sprintf("retention %s: dated %s or earlier (older than %d days)", p.Mode, cutoff, p.AfterDays)
	defer func() {
		if res.Deleted > 0 {
			s.notify()
		}
	}()
	for _, kind := range store.RetentionKinds() {
		var after ids.ID
		for {
			page, err := s.st.RetentionCandidates(ctx, clinic, kind, cutoff, states, p.Mode == store.RetentionDelete, after, s.cfg.Batch)
			if err != nil {
				return res, fmt.Errorf("retention: candidates: %w", err)
			}
			for _, id := range page {
				after = id
				if p.Mode == store.RetentionDelete {
					err = s.remove(ctx, clinic, kind, id, reason, &res)
				} else {
					err = s.backup(ctx, clinic, kind, id, cutoff, reason, &res)
				}
				if err != nil {
					return res, err
				}
			}
			if len(page) < s.cfg.Batch {
				break
			}
		}
	}
	return res, nil
}

func (s *Service) remove(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, reason string, res *Result) error {
	changeID, err := s.ids.Next()
	if err != nil {
		return err
	}
	_, err = s.st.RetentionUnsync(ctx, clinic, kind, id, changeID, reason)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err
	}
	res.Deleted++
	s.m.records.WithLabelValues(store.RetentionDeleted).Inc()
	return nil
}

func (s *Service) backup(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, cutoff, reason string, res *Result) error {
	rec, err := s.st.Get(ctx, clinic, kind, id)
	if err != nil {
		return err
	}
	if sha := store.FileSHA(store.RecordContent(rec)); sha != "" {
		only, err := s.st.FileOnlyInOld(ctx, clinic, sha, cutoff)
		if err != nil {
			return err
		}
		if !only {
			res.Skipped++ // a newer record names the same file: it stays hot
			return nil
		}
		f, err := s.files.Archive(ctx, clinic, sha)
		switch {
		case err == nil:
			if f.ArchivedAt != nil && f.State == filekey.StateArchived {
				res.FilesArchived++
			}
		case errors.Is(err, files.ErrNotFound), errors.Is(err, files.ErrDeleted):
			// No object to move (never uploaded, or deleted): the record
			// is backed up with nothing in cold storage.
		case errors.Is(err, files.ErrNotPresent), errors.Is(err, files.ErrArchiving), errors.Is(err, files.ErrRestoring):
			res.Skipped++ // an upload or a move is in progress: next run
			return nil
		default:
			return err
		}
	}
	ok, err := s.st.MarkBackedUp(ctx, clinic, kind, id, reason)
	if err != nil {
		return err
	}
	if ok {
		res.BackedUp++
		s.m.records.WithLabelValues(store.RetentionBackedUp).Inc()
	}
	return nil
}

// Restored is what a restore brought back.
type Restored struct {
	Records []store.Ref    `json:"records"`
	Files   []filekey.File `json:"files"`
}

// RestoreFile brings clinic's archived file sha back from cold storage and
// the backed-up records naming it back to the live state, left alone by
// the policy for RestoreHold. Restoring a present file changes nothing.
func (s *Service) RestoreFile(ctx context.Context, clinic ids.ID, sha, actor string) (Restored, error) {
	var out Restored
	f, err := s.files.Restore(ctx, clinic, sha)
	if err != nil {
		return out, err
	}
	out.Files = append(out.Files, f)
	refs, err := s.st.RecordsNamingFile(ctx, clinic, f.SHA256)
	if err != nil {
		return out, err
	}
	for _, r := range refs {
		ok, err := s.st.MarkRestored(ctx, clinic, r.Kind, r.ID, actor, s.cfg.RestoreHold)
		if err != nil {
			return out, err
		}
		if ok {
			out.Records = append(out.Records, r)
			s.m.records.WithLabelValues(store.RetentionRestored).Inc()
		}
	}
	return out, nil
}

// RestoreRecord brings a backed-up record back: its file from cold storage
// (and so every record naming it), itself to the live state; a study
// brings its backed-up children back too.
func (s *Service) RestoreRecord(ctx context.Context, clinic ids.ID, kind wire.Kind, id ids.ID, actor string) (Restored, error) {
	var out Restored
	rec, err := s.st.Get(ctx, clinic, kind, id)
	if err != nil {
		return out, err
	}
	if store.RecordMeta(rec).Deleted {
		return out, store.ErrNotFound
	}
	targets := []store.Record{rec}
	if kind == wire.KindStudy {
		for _, child := range []wire.Kind{wire.KindImage, wire.KindCapture, wire.KindProjectFile, wire.KindReport} {
			var after ids.ID
			for {
				rs, err := s.st.List(ctx, clinic, child, store.ListQuery{Parent: id, After: after, Limit: 500})
				if err != nil {
					return out, err
				}
				for _, r := range rs {
					after = store.RecordMeta(r).ID
					if store.RecordMeta(r).RetentionState == store.RetentionBackedUp {
						targets = append(targets, r)
					}
				}
				if len(rs) < 500 {
					break
				}
			}
		}
	}
	seen := map[string]bool{}
	for _, r := range targets {
		m := store.RecordMeta(r)
		if sha := store.FileSHA(store.RecordContent(r)); sha != "" && !seen[sha] {
			seen[sha] = true
			got, err := s.RestoreFile(ctx, clinic, sha, actor)
			switch {
			case errors.Is(err, files.ErrNotFound), errors.Is(err, files.ErrNotArchived), errors.Is(err, files.ErrDeleted):
				// nothing in cold storage: the record alone comes back
			case err != nil:
				return out, err
			}
			out.Files = append(out.Files, got.Files...)
			out.Records = append(out.Records, got.Records...)
		}
		ok, err := s.st.MarkRestored(ctx, clinic, m.Kind, m.ID, actor, s.cfg.RestoreHold)
		if err != nil {
			return out, err
		}
		if ok {
			out.Records = append(out.Records, store.Ref{Kind: m.Kind, ID: m.ID})
			s.m.records.WithLabelValues(store.RetentionRestored).Inc()
		}
	}
	return out, nil
}

// View is a clinic's retention state: the policy, its records by retention
// state, its files by state, the latest events.
type View struct {
	Policy      store.ClinicRetention  `json:"policy"`
	ColdStorage bool                   `json:"cold_storage"`
	Records     []store.RetentionCount `json:"records"`
	Files       files.Counts           `json:"files"`
	Events      []store.RetentionEvent `json:"recent_events"`
}

// State returns clinic's View.
func (s *Service) State(ctx context.Context, clinic ids.ID) (View, error) {
	var v View
	var err error
	if v.Policy, err = s.st.Retention(ctx, clinic); err != nil {
		return v, err
	}
	v.ColdStorage = s.files.ColdStorage()
	if v.Records, err = s.st.RetentionCounts(ctx, clinic); err != nil {
		return v, err
	}
	if v.Files, err = s.files.Count(ctx, clinic); err != nil {
		return v, err
	}
	if v.Events, err = s.st.RetentionEvents(ctx, clinic, 20); err != nil {
		return v, err
	}
	return v, nil
}
