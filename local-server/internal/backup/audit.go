package backup

import (
	"context"
	"fmt"
	"os"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/audit"
)

// AuditCloud is the cloud's copy of the clinic's own audit chain.
type AuditCloud interface {
	// AuditAfter returns the entries after seq (at most limit) and the
	// cloud's head.
	AuditAfter(ctx context.Context, after int64, limit int) ([]audit.Entry, int64, error)
}

// CatchUpAudit appends to chain the entries the cloud holds past the
// chain's head here (a database restored from a backup lacks those made
// after the snapshot), keeping their hashes, so the chain continues where
// the cloud's copy ends instead of forking. batch, when set, sees the head
// after each batch. It returns the head.
func CatchUpAudit(ctx context.Context, l *audit.Log, cloud AuditCloud, chain string, batch func(head int64) error) (int64, error) {
	head, err := l.Head(ctx, chain)
	if err != nil {
		return 0, err
	}
	for {
		es, _, err := cloud.AuditAfter(ctx, head, 500)
		if err != nil {
			return head, err
		}
		if len(es) == 0 {
			return head, nil
		}
		if head, err = l.Import(ctx, chain, es); err != nil {
			return head, err
		}
		if batch != nil {
			if err := batch(head); err != nil {
				return head, err
			}
		}
	}
}

// restoreAudit continues the restored database's audit chain: the entries
// the cloud holds past the snapshot come back first, then the restore
// itself is recorded (by the machine's console, "service"). Done before
// the database is put in place, so a restored machine never starts with a
// chain that would fork from the cloud's copy.
func restoreAudit(ctx context.Context, db *gorm.DB, cloud AuditCloud, chain string, e audit.Entry) (audit.Entry, error) {
	l, err := audit.Open(ctx, db)
	if err != nil {
		return audit.Entry{}, err
	}
	if _, err := CatchUpAudit(ctx, l, cloud, chain, nil); err != nil {
		return audit.Entry{}, fmt.Errorf("backup: bring back the audit entries made after the backup: %w", err)
	}
	e.Chain = chain
	if e.Remote == "" {
		host, _ := os.Hostname()
		e.Remote = "console:" + host
	}
	return l.Append(ctx, e)
}
