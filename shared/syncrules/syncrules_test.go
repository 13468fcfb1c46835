package syncrules_test

import (
	"errors"
	"testing"

	"pgregory.net/rapid"

	"github.com/scsync/scsync/shared/syncrules"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

func genVersion() *rapid.Generator[version.V] {
	return rapid.Custom(func(t *rapid.T) version.V {
		return version.V{A: rapid.Uint32Range(1, 20).Draw(t, "A"), B: rapid.Uint32Range(0, 3).Draw(t, "B")}
	})
}

func genRecord() *rapid.Generator[syncrules.Record] {
	return rapid.Custom(func(t *rapid.T) syncrules.Record {
		r := syncrules.Record{Exists: rapid.Bool().Draw(t, "exists")}
		if r.Exists {
			r.Version = genVersion().Draw(t, "version")
			r.Deleted = rapid.Bool().Draw(t, "deleted")
			r.Fence = rapid.Int64Range(0, 5).Draw(t, "fence")
			r.Session = rapid.SampledFrom([]string{"", "s1", "s2"}).Draw(t, "session")
			if rapid.Bool().Draw(t, "has local version") {
				r.LocalVersion = genVersion().Draw(t, "local version")
			}
		}
		return r
	})
}

// TestDecideSave: a save refuses what it must and otherwise bumps the
// version as M18 says.
func TestDecideSave(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord().Draw(t, "record")
		s := syncrules.Save{
			Create:   rapid.Bool().Draw(t, "create"),
			Delete:   rapid.Bool().Draw(t, "delete"),
			Session:  rapid.SampledFrom([]string{"", "s1", "s2"}).Draw(t, "session"),
			Fence:    rapid.Int64Range(0, 5).Draw(t, "fence"),
			Unfenced: rapid.Bool().Draw(t, "unfenced"),
		}
		if s.Session != "" {
			s.SessionVersion = genVersion().Draw(t, "session version")
		}
		if rapid.Bool().Draw(t, "with base") {
			b := genVersion().Draw(t, "base")
			s.Base = &b
		}
		d := syncrules.DecideSave(r, s)
		switch {
		case s.Create && r.Exists:
			if !errors.Is(d.Err, syncrules.ErrExists) {
				t.Fatalf("create over an existing record = %+v, want ErrExists", d)
			}
		case s.Create:
			if d.Err != nil || d.Version != version.First || !d.Base.IsZero() {
				t.Fatalf("create = %+v, want 1.0 from 0.0", d)
			}
		case !r.Exists || r.Deleted:
			if !errors.Is(d.Err, syncrules.ErrNotFound) {
				t.Fatalf("save of a missing record = %+v, want ErrNotFound", d)
			}
		case s.Base != nil && *s.Base != r.Version:
			if !errors.Is(d.Err, syncrules.ErrVersionConflict) {
				t.Fatalf("save with base %s over %s = %+v, want ErrVersionConflict", *s.Base, r.Version, d)
			}
		case s.Fence > 0 && s.Fence < r.Fence:
			if !errors.Is(d.Err, syncrules.ErrStaleFence) {
				t.Fatalf("save with token %d under %d = %+v, want ErrStaleFence", s.Fence, r.Fence, d)
			}
		default:
			if d.Err != nil {
				t.Fatalf("save = %+v, want it accepted", d)
			}
			want := r.Version.NextSession()
			if s.Session != "" && r.Session == s.Session {
				want = r.Version.NextSave()
			}
			if d.Version != want || !r.Version.Less(d.Version) {
				t.Fatalf("save over %s (session %q, last %q) = %s, want %s", r.Version, s.Session, r.Session, d.Version, want)
			}
			if d.Fence < r.Fence || d.Fence < s.Fence {
				t.Fatalf("fence after the save = %d, below %d or %d", d.Fence, r.Fence, s.Fence)
			}
			collides := s.Session != "" && r.Session != s.Session && r.Version != s.SessionVersion
			if d.Collides != collides {
				t.Fatalf("collides = %v, want %v", d.Collides, collides)
			}
			if collides && d.Base != s.SessionVersion || !collides && d.Base != r.Version {
				t.Fatalf("base = %s (collides %v, session at %s, record at %s)", d.Base, collides, s.SessionVersion, r.Version)
			}
		}
	})
}

// TestDecideUp: duplicates and parked changes do nothing; a change not
// concurrent is taken; a concurrent one is resolved by the policy to a
// version newer than both contenders.
func TestDecideUp(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord().Draw(t, "record")
		r.Deleted = r.Deleted && r.Exists
		c := syncrules.Change{
			Base:         genVersion().Draw(t, "base"),
			Deleted:      rapid.Bool().Draw(t, "deleted"),
			Fence:        rapid.Int64Range(0, 5).Draw(t, "fence"),
			Known:        rapid.Bool().Draw(t, "known"),
			BehindParked: rapid.Bool().Draw(t, "behind parked"),
			MissingRef:   rapid.Bool().Draw(t, "missing ref"),
		}
		c.New = c.Base.NextSession()
		policy := rapid.SampledFrom([]string{"", syncrules.LocalWins, syncrules.CloudWins, syncrules.KeepBoth}).Draw(t, "policy")
		d := syncrules.DecideUp(r, c, policy)
		switch {
		case c.Known:
			if d.Outcome != syncrules.Duplicate {
				t.Fatalf("known change = %+v, want a duplicate", d)
			}
			return
		case c.BehindParked || c.MissingRef:
			if d.Outcome != syncrules.Park {
				t.Fatalf("change behind a parked one or missing a parent = %+v, want parked", d)
			}
			return
		}
		if d.Fence != max(r.Fence, c.Fence) {
			t.Fatalf("fence = %d, want %d", d.Fence, max(r.Fence, c.Fence))
		}
		if r.Exists && !r.Version.Less(d.Version) {
			t.Fatalf("version went from %s to %s", r.Version, d.Version)
		}
		concurrent := r.Exists && (c.Fence > 0 && c.Fence < r.Fence ||
			c.Base != r.Version && (r.LocalVersion.IsZero() || c.Base != r.LocalVersion))
		if !concurrent {
			if d.Outcome != syncrules.Apply || !d.TakeChange || d.Conflict != "" || d.LocalVersion != c.New || d.Version.Less(c.New) {
				t.Fatalf("change %s→%s on %s (local %s) = %+v, want it applied", c.Base, c.New, r.Version, r.LocalVersion, d)
			}
			return
		}
		if d.Outcome != syncrules.Conflict || d.Conflict != syncrules.Policy(policy) {
			t.Fatalf("concurrent change = %+v, want resolved by %s", d, syncrules.Policy(policy))
		}
		if !r.Version.Less(d.Version) || !c.New.Less(d.Version) {
			t.Fatalf("resolved version %s is not newer than both %s and %s", d.Version, r.Version, c.New)
		}
		switch syncrules.Policy(policy) {
		case syncrules.LocalWins:
			if !d.TakeChange || d.Copy || d.Flag {
				t.Fatalf("local-wins = %+v", d)
			}
		case syncrules.CloudWins:
			if d.TakeChange || d.Copy || d.Flag || !d.LocalVersion.IsZero() {
				t.Fatalf("cloud-wins = %+v", d)
			}
		case syncrules.KeepBoth:
			if d.TakeChange || !d.Flag || d.Copy == c.Deleted {
				t.Fatalf("keep-both = %+v (a copy unless the change is a delete)", d)
			}
		}
	})
}

// TestDecideDown: in cloud_seq order from the checkpoint; a pending local
// change is never overwritten by another change.
func TestDecideDown(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		l := syncrules.Local{Exists: rapid.Bool().Draw(t, "exists")}
		if l.Exists {
			l.Pending = rapid.Int64Range(0, 3).Draw(t, "pending")
			l.Queued = rapid.Bool().Draw(t, "queued")
			l.Version = genVersion().Draw(t, "version")
			l.Deleted = rapid.Bool().Draw(t, "deleted")
			l.Origin = rapid.SampledFrom([]wire.Origin{wire.OriginLocal, wire.OriginCloud}).Draw(t, "origin")
		}
		cp := rapid.Int64Range(0, 10).Draw(t, "checkpoint")
		a := syncrules.Applied{
			ChangeID: rapid.Int64Range(1, 3).Draw(t, "change"),
			CloudSeq: rapid.Int64Range(1, 12).Draw(t, "seq"),
			New:      genVersion().Draw(t, "new"),
			Deleted:  rapid.Bool().Draw(t, "tombstone"),
			Unsync:   rapid.Bool().Draw(t, "unsync"),
			Conflict: rapid.SampledFrom([]string{"", syncrules.LocalWins, syncrules.CloudWins, syncrules.KeepBoth}).Draw(t, "conflict"),
			Origin:   rapid.SampledFrom([]wire.Origin{wire.OriginLocal, wire.OriginCloud}).Draw(t, "from"),
		}
		a.Unsync = a.Unsync && a.Deleted
		d := syncrules.DecideDown(l, cp, a)
		switch {
		case a.CloudSeq <= cp:
			if d.Outcome != syncrules.Duplicate {
				t.Fatalf("seq %d at checkpoint %d = %+v, want a duplicate", a.CloudSeq, cp, d)
			}
		case a.CloudSeq > cp+1:
			if d.Outcome != syncrules.Gap {
				t.Fatalf("seq %d at checkpoint %d = %+v, want a gap", a.CloudSeq, cp, d)
			}
		case l.Pending != 0 && l.Pending != a.ChangeID:
			if d.Outcome != syncrules.Skip {
				t.Fatalf("change %d over pending %d = %+v, want skipped", a.ChangeID, l.Pending, d)
			}
		case d.Outcome == syncrules.AcceptAsSent:
			if !d.Own || a.Deleted || a.Conflict != "" || a.New != l.Version {
				t.Fatalf("accepted as sent, but %+v over %+v", a, l)
			}
		case d.Outcome == syncrules.Apply:
			if d.Conflicted != (a.Conflict == syncrules.KeepBoth || a.ConflictOf != 0) {
				t.Fatalf("conflicted = %v for %+v", d.Conflicted, a)
			}
		case d.Outcome != syncrules.Unsync || !a.Unsync:
			t.Fatalf("DecideDown(%+v, %d, %+v) = %+v", l, cp, a, d)
		}
	})
}

func TestPolicy(t *testing.T) {
	for in, want := range map[string]string{"": syncrules.LocalWins, "local-wins": syncrules.LocalWins,
		"cloud-wins": syncrules.CloudWins, "keep-both": syncrules.KeepBoth, "bogus": syncrules.LocalWins} {
		if got := syncrules.Policy(in); got != want {
			t.Errorf("Policy(%q) = %q, want %q", in, got, want)
		}
	}
	for _, p := range []string{syncrules.LocalWins, syncrules.CloudWins, syncrules.KeepBoth} {
		r := syncrules.ResolveCloudCollision(p)
		if (p == syncrules.LocalWins) != errors.Is(r.Err, syncrules.ErrCollision) || (p == syncrules.KeepBoth) != r.CopyCurrent {
			t.Errorf("ResolveCloudCollision(%s) = %+v", p, r)
		}
	}
}
