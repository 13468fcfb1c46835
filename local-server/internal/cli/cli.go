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
	var p struct {
		Remaining int64 `json:"remaining"`
		Queued    int64 `json:"queued"`
	}
	if err := getJSON(ctx, base+"/v1/backfill", &p); err == nil && p.Remaining > 0 {
		fmt.Fprintf(w, "backfill          %s %d to go (sc-local backfill for details)\n", bar(p.Queued, p.Queued+p.Remaining), p.Remaining)
	}
	return nil
}

// bar draws done of total as [####......] NN%.
func bar(done, total int64) string {
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	const width = 30
	n := int(frac * width)
	return fmt.Sprintf("[%s%s] %3.0f%%", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100)
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

// Backfill prints the backfill's progress with a bar.
func Backfill(ctx context.Context, w io.Writer, base string) error {
	var p struct {
		Remaining     int64   `json:"remaining"`
		Queued        int64   `json:"queued"`
		QueuedBytes   int64   `json:"queued_bytes"`
		RatePerSecond float64 `json:"rate_per_second"`
		ETASeconds    float64 `json:"eta_seconds"`
		Waiting       bool    `json:"waiting_for_live_changes"`
	}
	if err := getJSON(ctx, base+"/v1/backfill", &p); err != nil {
		return err
	}
	var sc struct {
		Note string `json:"note"`
	}
	_ = getJSON(ctx, base+"/v1/scope", &sc)
	total := p.Queued + p.Remaining
	fmt.Fprintf(w, "backfill %s  %d of %d records sent by this run, %d to go\n", bar(p.Queued, total), p.Queued, total, p.Remaining)
	fmt.Fprintf(w, "          %s queued, %.1f records/s", events.Bytes(p.QueuedBytes), p.RatePerSecond)
	if p.ETASeconds > 0 {
		fmt.Fprintf(w, ", about %s left", (time.Duration(p.ETASeconds) * time.Second).String())
	}
	fmt.Fprintln(w)
	switch {
	case p.Remaining == 0:
		fmt.Fprintln(w, "          nothing left: the cloud has everything the scope covers")
	case p.Waiting:
		fmt.Fprintln(w, "          paused while live changes go first")
	}
	if sc.Note != "" {
		fmt.Fprintf(w, "note: %s\n", sc.Note)
	}
	return nil
}

func getJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sc-local is not answering at %s (is it running?): %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
