package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/scsync/scsync/local-server/internal/backup"
	"github.com/scsync/scsync/local-server/internal/cloudapi"
	"github.com/scsync/scsync/local-server/internal/config"
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
func Restore(ctx context.Context, w io.Writer, cfg config.Config, force bool) error {
	if cfg.Clinic.ID == 0 || cfg.Cloud.URL == "" || cfg.Cloud.Token == "" {
		return fmt.Errorf("restore needs the clinic id, cloud url and cloud token in the config (the same ones the old machine had, or run sc-local enroll first)")
	}
	cloud := cloudapi.New(cfg.Cloud.URL, cfg.Cloud.Token, ids.ID(cfg.Clinic.ID))
	fmt.Fprintf(w, "restoring clinic %d from the newest backup in %s into %s\n", cfg.Clinic.ID, cfg.Cloud.URL, cfg.DBPath())
	last := time.Time{}
	bar := func(done, total int64) {
		if time.Since(last) < 200*time.Millisecond && done != total {
			return
		}
		last = time.Now()
		frac := 1.0
		if total > 0 {
			frac = float64(done) / float64(total)
		}
		const width = 30
		n := int(frac * width)
		fmt.Fprintf(w, "\rdownload [%s%s] %3.0f%%  %s of %s", strings.Repeat("#", n), strings.Repeat(".", width-n),
			frac*100, events.Bytes(done), events.Bytes(total))
	}
	r, err := backup.Restore(ctx, cloud, cfg.DBPath(), force, bar)
	if r.Backup.ID != 0 {
		fmt.Fprintln(w)
	}
	if err != nil {
		return err
	}
	if r.MovedAside != "" {
		fmt.Fprintf(w, "the database that was there is kept as %s\n", r.MovedAside)
	}
	fmt.Fprintf(w, "restored backup %s of %s: %d records, up to cloud_seq %d\n", r.Backup.ID,
		r.Backup.CreatedAt.Local().Format(time.DateTime), r.Info.Records, r.Info.Checkpoint)
	fmt.Fprintf(w, "start sc-local now: it catches up from the cloud what changed since the backup")
	if r.FilesToFetch > 0 {
		fmt.Fprintf(w, " and downloads %d image file(s) this machine does not have", r.FilesToFetch)
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintln(w, "changes made on the old machine after the backup that never reached the cloud cannot be recovered.")
	return nil
}
