package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/scsync/scsync/local-server/internal/verify"
)

// runVerify runs anti-entropy every interval (0: never) until ctx ends.
// A failed run (the cloud unreachable) waits for the next one.
func runVerify(ctx context.Context, v *verify.Verifier, every time.Duration, repair bool, notify func(), log *slog.Logger) error {
	if every <= 0 {
		return nil
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rep, err := v.Run(ctx, repair)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("verify failed", "err", err)
			}
			continue
		}
		if repair && !rep.Equal {
			notify() // repairs wrote outbox rows
		}
	}
}
