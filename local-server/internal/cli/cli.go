// Package cli holds sc-local's commands for clinic IT, which talk to the
// running server over its local API and print plain words.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/shared/events"
)

// Status prints the running server's replication status.
func Status(ctx context.Context, w io.Writer, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/status", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sc-local is not answering at %s (is it running?): %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status: server answered %s", resp.Status)
	}
	var s store.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	contact := "never"
	if s.LastContact != nil {
		contact = fmt.Sprintf("%s (%s ago)", s.LastContact.Local().Format(time.DateTime), time.Since(*s.LastContact).Round(time.Second))
	}
	fmt.Fprintf(w, "clinic            %s\n", s.Clinic)
	fmt.Fprintf(w, "synced            %d\n", s.Synced)
	fmt.Fprintf(w, "pending           %d (oldest %s)\n", s.Pending, (time.Duration(s.OldestPendingAge) * time.Second).String())
	fmt.Fprintf(w, "conflicts         %d\n", s.Conflict)
	fmt.Fprintf(w, "outbox            %d message(s) not yet confirmed by the broker\n", s.Outbox)
	fmt.Fprintf(w, "checkpoint        cloud_seq %d\n", s.Checkpoint)
	fmt.Fprintf(w, "last cloud contact %s\n", contact)
	return nil
}

// Watch prints the live events of the running server's viewers (Editing,
// Saved, Closed, transfers…), one line each, until ctx ends; it reconnects
// and resumes by itself.
func Watch(ctx context.Context, w io.Writer, base string) error {
	url := "ws" + strings.TrimPrefix(base, "http") + "/v1/events"
	fmt.Fprintf(w, "watching %s (Ctrl-C stops)\n", url)
	err := events.Watch(ctx, url, "", 0, func(e events.Event) {
		if e.Type == events.TypeReset {
			return
		}
		fmt.Fprintln(w, events.Format(e))
	})
	if ctx.Err() != nil {
		return nil //nolint:nilerr // Ctrl-C is the normal way out
	}
	return err
}
