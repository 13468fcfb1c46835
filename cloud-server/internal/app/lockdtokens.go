package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/scsync/scsync/cloud-server/internal/store"
	lockclient "github.com/scsync/scsync/lockd/client"
	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
)

// lockdTokens issues clinics' lockd tokens: a random token handed to the
// clinic once, whose SHA-256 alone is registered with lockd (stored in its
// Redis, so every replica accepts it, and stops accepting the previous one,
// at once) and kept in PostgreSQL, from where Run puts the set back when
// lockd's Redis lost it.
type lockdTokens struct {
	c   *lockclient.Client
	st  *store.Store
	log *slog.Logger
	// behind is set when a token was issued while lockd was unreachable:
	// Run then puts the whole set (PostgreSQL is the source of truth) as
	// soon as lockd answers.
	behind *atomic.Bool
}

func (l lockdTokens) Issue(ctx context.Context, clinic ids.ID) (string, error) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	tok := "scl_" + hex.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(tok))
	digest := hex.EncodeToString(sum[:])
	if err := l.c.SetClinicToken(ctx, clinic, digest); err != nil {
		if !errors.Is(err, lockclient.ErrUnavailable) || l.behind == nil {
			return "", fmt.Errorf("register lockd token: %w", err)
		}
		// lockd is often away for a while; enrollment and rotation go on
		// and the token reaches lockd with the next resync (a clinic
		// edits "anyway" meanwhile, as with any lockd outage).
		l.behind.Store(true)
		l.log.Warn("lockd unreachable: the clinic's lockd token is registered when it answers", "clinic", clinic)
	}
	// Before the clinic row exists (enrollment) this updates nothing; the
	// api records it after creating the row.
	if err := l.st.SetLockdDigest(ctx, clinic, digest); err != nil {
		return "", err
	}
	return tok, nil
}

// lockdDigest is the stored form of a lockd token.
func lockdDigest(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func (l lockdTokens) Record(ctx context.Context, clinic ids.ID, tok string) error {
	return l.st.SetLockdDigest(ctx, clinic, lockdDigest(tok))
}

func (l lockdTokens) Revoke(ctx context.Context, clinic ids.ID) error {
	if err := l.st.SetLockdDigest(ctx, clinic, ""); err != nil {
		return err
	}
	if err := l.c.DeleteClinicToken(ctx, clinic); err != nil {
		return fmt.Errorf("revoke lockd token: %w", err)
	}
	return nil
}

// Run checks every few seconds that lockd still holds the clinic token set
// and puts it back when its Redis lost it (restart without persistence, a
// new Redis).
func (l lockdTokens) Run(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := l.resync(ctx); err != nil && ctx.Err() == nil {
			l.log.Debug("lockd token set not checked", "err", err)
		}
	}
}

func (l lockdTokens) resync(ctx context.Context) error {
	forced := l.behind != nil && l.behind.Swap(false)
	ok, err := l.c.ClinicTokensSynced(ctx)
	if err != nil || (ok && !forced) {
		if err != nil && forced {
			l.behind.Store(true)
		}
		return err
	}
	ds, err := l.st.LockdDigests(ctx)
	if err != nil {
		return err
	}
	set := lockapi.ClinicTokens{Tokens: make([]lockapi.ClinicTokenEntry, 0, len(ds))}
	for c, d := range ds {
		set.Tokens = append(set.Tokens, lockapi.ClinicTokenEntry{Clinic: c, SHA256: d})
	}
	if err := l.c.PutClinicTokens(ctx, set); err != nil {
		if forced {
			l.behind.Store(true)
		}
		return err
	}
	l.log.Info("lockd had lost the clinic tokens; put them back", "clinics", len(set.Tokens))
	return nil
}
