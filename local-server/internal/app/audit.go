package app

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/local-server/internal/backup"
	"github.com/scsync/scsync/local-server/internal/cloudapi"
	"github.com/scsync/scsync/shared/audit"
)

// auditShipped remembers how far the clinic's audit chain reached the cloud.
type auditShipped struct {
	Chain string `gorm:"primaryKey"`
	Seq   int64  `gorm:"not null"`
}

func (auditShipped) TableName() string { return "audit_shipped" }

// auditShipper sends the clinic's audit chain to the cloud, where it is kept
// (six years and more) next to the cloud's own: a lost or restored clinic
// machine does not take its audit trail with it.
type auditShipper struct {
	db    *sql.DB
	log   *audit.Log
	cloud *cloudapi.Client
	chain string
	every time.Duration
	lg    *slog.Logger
}

func newAuditShipper(ctx context.Context, db *gorm.DB, l *audit.Log, cloud *cloudapi.Client, chain string, lg *slog.Logger) (*auditShipper, error) {
	if !db.WithContext(ctx).Migrator().HasTable(&auditShipped{}) {
		return nil, errors.New("no audit_shipped table (the schema owner migrates it first)")
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	return &auditShipper{db: sqlDB, log: l, cloud: cloud, chain: chain, every: 5 * time.Second, lg: lg}, nil
}

// catchUp brings back entries the cloud holds past this machine's head (a
// machine restored from a backup), so the chain continues where the cloud's
// copy ends instead of forking. Best effort: the cloud may be away.
func (a *auditShipper) catchUp(ctx context.Context) error {
	_, err := backup.CatchUpAudit(ctx, a.log, a.cloud, a.chain, func(head int64) error {
		a.lg.Info("audit entries brought back from the cloud", "head", head)
		return a.mark(ctx, head)
	})
	return err
}

// The shipper's statements run as fixed text on the clinic's connection
// (kept prepared by the store's connector), as the store's relay does
// (store/rawsql.go): through gorm each was built anew and its rows read
// through reflection, up to a few times a second while the clinic saves.
const (
	markShipped   = "INSERT INTO audit_shipped (chain, seq) VALUES (?, ?) ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq"
	selectShipped = "SELECT seq FROM audit_shipped WHERE chain = ?"
)

// shipBatch is how many entries go to the cloud in one upload.
const shipBatch = 500

func (a *auditShipper) mark(ctx context.Context, seq int64) error {
	_, err := a.db.ExecContext(ctx, markShipped, a.chain, seq)
	return err
}

func (a *auditShipper) shipped(ctx context.Context) (int64, error) {
	var seq int64
	err := a.db.QueryRowContext(ctx, selectShipped, a.chain).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return seq, err
}

// ship sends what the cloud does not have yet; it reports whether more waits.
func (a *auditShipper) ship(ctx context.Context) (bool, error) {
	from, err := a.shipped(ctx)
	if err != nil {
		return false, err
	}
	es, err := a.log.List(ctx, audit.Query{Chain: a.chain, After: from, Limit: shipBatch}) // fixed text (audit.listAfter)
	if err != nil || len(es) == 0 {
		return false, err
	}
	head, err := a.cloud.UploadAudit(ctx, es)
	var ce *cloudapi.Error
	if errors.As(err, &ce) && ce.Status == http.StatusConflict && ce.Code == "audit_gap" {
		// The cloud has less than we think we sent (its database was
		// restored): start again from what it has.
		_, cloudHead, gerr := a.cloud.AuditAfter(ctx, 0, 1)
		if gerr != nil {
			return false, gerr
		}
		return true, a.mark(ctx, min(cloudHead, from))
	}
	if err != nil {
		return false, err
	}
	return len(es) == shipBatch, a.mark(ctx, min(head, es[len(es)-1].Seq))
}

// Run ships every few seconds until ctx ends.
func (a *auditShipper) Run(ctx context.Context) error {
	if err := a.catchUp(ctx); err != nil && ctx.Err() == nil {
		a.lg.Warn("audit catch-up from the cloud failed; retrying later", "err", err)
	}
	t := time.NewTicker(a.every)
	defer t.Stop()
	for {
		more, err := a.ship(ctx)
		if err != nil && ctx.Err() == nil {
			a.lg.Warn("audit entries not sent to the cloud yet", "err", err)
		}
		if more && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
