package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/scsync/scsync/local-server/internal/api"
	"github.com/scsync/scsync/local-server/internal/backup"
	"github.com/scsync/scsync/local-server/internal/cloudapi"
	"github.com/scsync/scsync/local-server/internal/config"
	"github.com/scsync/scsync/local-server/internal/datadir"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
)

// Backup asks the running server to back its database up to the cloud now.
func Backup(ctx context.Context, w io.Writer, base string) error {
	fmt.Fprintln(w, "taking a snapshot of the database and sending it to the cloud…")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/backup", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sc-local is not answering at %s (is it running?): %w", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		var e struct{ Message string }
		_ = json.Unmarshal(body, &e)
		return fmt.Errorf("backup failed: %s", e.Message)
	}
	var b filekey.Backup
	if err := json.Unmarshal(body, &b); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(w, "backup %s stored: %d records, %s compressed, up to cloud_seq %d\n", b.ID, b.Records, events.Bytes(b.Size), b.Checkpoint)
	return nil
}

// Restore rebuilds this machine's database from the newest backup in the
// cloud (M27), for a clinic server that was replaced or lost its disk.
// identity is the backup recovery key ("" for backup.identity_file).
func Restore(ctx context.Context, w io.Writer, cfg config.Config, identity string, force bool) error {
	if identity == "" {
		identity = cfg.BackupIdentityFile()
	}
	if cfg.Clinic.ID == 0 || cfg.Cloud.URL == "" || cfg.Cloud.Token == "" {
		return fmt.Errorf("restore needs the clinic id, cloud url and cloud token in the config (the same ones the old machine had, or run sc-local enroll first)")
	}
	// A running server holds the data directory; restoring under it would
	// swap its database away.
	dirLock, err := datadir.Acquire(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer dirLock.Release() //nolint:errcheck // released at exit anyway
	clientTLS, err := cfg.ClientTLS().Config()
	if err != nil {
		return fmt.Errorf("tls.ca_file: %w", err)
	}
	clinic := ids.ID(cfg.Clinic.ID)
	cloud := cloudapi.New(cfg.Cloud.URL, cfg.Cloud.Token, clinic).WithTLS(clientTLS)
	fmt.Fprintf(w, "restoring clinic %d from the newest backup in %s into %s\n", cfg.Clinic.ID, cfg.Cloud.URL, cfg.DBPath())
	last := time.Time{}
	bar := func(done, total int64) {
		if time.Since(last) < 200*time.Millisecond && done != total {
			return
		}
		last = time.Now()
		fmt.Fprintf(w, "\rdownload %s  %s of %s", bar(done, total), events.Bytes(done), events.Bytes(total))
	}
	r, err := backup.Restore(ctx, cloud, cfg.DBPath(), backup.RestoreOptions{Identity: identity, Force: force, Progress: bar,
		HTTP: backup.NewHTTP(clientTLS), AuditChain: api.Chain(clinic), Clinic: clinic})
	if errors.Is(err, backup.ErrNoIdentity) {
		return fmt.Errorf("%w: backups are encrypted to the clinic's recovery key; put the copy IT kept of backup-identity.txt there, or pass -identity FILE (docs/backup.md)", err)
	}
	if r.Backup.ID != 0 {
		fmt.Fprintln(w)
	}
	if err != nil {
		return err
	}
	// Run as root (sudo), the restored files would be root's: hand them to
	// the data directory's owner, the service user.
	if n, err := datadir.GiveToOwner(cfg.DataDir); err != nil {
		return fmt.Errorf("restored, but giving the files to the data directory's owner failed: %w", err)
	} else if n > 0 {
		fmt.Fprintf(w, "gave %d file(s) to the owner of %s (the service user)\n", n, cfg.DataDir)
	}
	if r.MovedAside != "" {
		fmt.Fprintf(w, "the database that was there is kept as %s\n", r.MovedAside)
	}
	fmt.Fprintf(w, "restored backup %s of %s: %d records, up to cloud_seq %d\n", r.Backup.ID,
		r.Backup.CreatedAt.Local().Format(time.DateTime), r.Info.Records, r.Info.Checkpoint)
	fmt.Fprintf(w, "audit trail: continued from the cloud's copy up to entry %d; the restore is entry %d\n", r.Audit.Seq-1, r.Audit.Seq)
	fmt.Fprintf(w, "start sc-local now: it catches up from the cloud what changed since the backup")
	if r.FilesToFetch > 0 {
		fmt.Fprintf(w, " and downloads %d image file(s) this machine does not have", r.FilesToFetch)
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintln(w, "changes made on the old machine after the backup that never reached the cloud cannot be recovered.")
	return nil
}
