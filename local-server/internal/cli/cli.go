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
	"github.com/scsync/scsync/shared/buildinfo"
	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/wire"
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
	var s struct {
		store.Status
		Build     buildinfo.Release `json:"build"`
		Protocols wire.Range        `json:"protocols"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	contact := "never"
	if s.LastContact != nil {
		contact = fmt.Sprintf("%s (%s ago)", s.LastContact.Local().Format(time.DateTime), time.Since(*s.LastContact).Round(time.Second))
	}
	fmt.Fprintf(w, "clinic            %s\n", s.Clinic)
	fmt.Fprintf(w, "release           %s\n", release(s.Build))
	fmt.Fprintf(w, "protocol          %s\n", s.Protocols)
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

// release says which release a server runs: "1.4.0 (commit 62b918d1a2b3)".
func release(r buildinfo.Release) string {
	if r.Version == "" {
		return "unknown (a release that does not say)"
	}
	if r.Commit == "" {
		return r.Version
	}
	return r.Version + " (commit " + r.Commit + ")"
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
// and resumes by itself. With withTitles each line names the record's
// title, read from the server (see titles).
func Watch(ctx context.Context, w io.Writer, base, token string, withTitles bool) error {
	url := "ws" + strings.TrimPrefix(base, "http") + "/v1/events"
	fmt.Fprintf(w, "watching %s (Ctrl-C stops)\n", url)
	seen := onceFilter(512)
	names := newTitles(base, 512)
	err := events.Watch(ctx, url, token, 0, func(e events.Event) {
		if e.Type == events.TypeReset || !seen(e) {
			return
		}
		title := ""
		if withTitles {
			title = names.of(ctx, e)
		}
		fmt.Fprintln(w, events.FormatTitled(e, title))
	})
	if ctx.Err() != nil {
		return nil //nolint:nilerr // Ctrl-C is the normal way out
	}
	return err
}

// onceFilter returns a function that is true the first time it sees a
// change event (changed, conflict) for a record version and false after: a
// clinic's own change is announced twice to its viewers, once by the cloud
// node that accepted it (on the event bus) and once when the acceptance is
// applied here (so a viewer re-reads the record as synced). A person reading
// `sc-local watch` wants one line. It remembers the last n.
func onceFilter(n int) func(events.Event) bool {
	seen := make(map[string]struct{}, n)
	ring := make([]string, n)
	next := 0
	return func(e events.Event) bool {
		if e.Type != events.TypeChanged && e.Type != events.TypeConflict {
			return true
		}
		key := e.Type + " " + e.Kind + " " + e.Record.String() + " " + e.Version.String()
		if _, ok := seen[key]; ok {
			return false
		}
		if old := ring[next]; old != "" {
			delete(seen, old)
		}
		ring[next], next = key, (next+1)%n
		seen[key] = struct{}{}
		return true
	}
}

// backfillProgress is GET /v1/backfill.
type backfillProgress struct {
	Remaining     int64   `json:"remaining"`
	InFlight      int64   `json:"in_flight"`
	Queued        int64   `json:"queued"`
	QueuedBytes   int64   `json:"queued_bytes"`
	RatePerSecond float64 `json:"rate_per_second"`
	ETASeconds    float64 `json:"eta_seconds"`
	Waiting       bool    `json:"waiting_for_live_changes"`
	Measured      bool    `json:"measured"`
}

// Backfill prints the backfill's progress with a bar.
func Backfill(ctx context.Context, w io.Writer, base string) error {
	var p backfillProgress
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
	fmt.Fprintf(w, "          %s\n", backfillState(p))
	if sc.Note != "" {
		fmt.Fprintf(w, "note: %s\n", sc.Note)
	}
	return nil
}

// backfillState says in words where the backfill is. The server recounts
// its remaining work every 30 s (and when an import or a scope change kicks
// it), so "nothing left" is said as of that count, never as a promise.
func backfillState(p backfillProgress) string {
	switch {
	case !p.Measured:
		return "counting what the cloud does not have yet…"
	case p.Remaining == 0 && p.InFlight == 0:
		return "nothing left at the last count: the cloud has everything the scope covers (recounted every 30 s and after an import)"
	case p.Remaining == p.InFlight:
		return fmt.Sprintf("all queued; waiting for the cloud to confirm %d", p.InFlight)
	case p.Waiting:
		return "paused while live changes go first"
	default:
		return "sending, newest first"
	}
}

// BackfillWatch prints the backfill's progress every interval, one line
// each, until ctx ends (Ctrl-C). The total is the most records this watch
// has known about: it grows when an import adds work and never shrinks when
// the server's count is refreshed, so the bar does not jump back and forth.
func BackfillWatch(ctx context.Context, w io.Writer, base string, every time.Duration) error {
	fmt.Fprintf(w, "watching the backfill of %s every %s (Ctrl-C stops)\n", base, every)
	var total, start int64
	first := true
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var p backfillProgress
		err := getJSON(ctx, base+"/v1/backfill", &p)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			fmt.Fprintf(w, "%s  %v\n", time.Now().Format("15:04:05"), err)
		default:
			if first {
				start, first = p.Queued, false
			}
			done := p.Queued - start
			total = max(total, done+p.Remaining)
			line := fmt.Sprintf("%s  %s  %d of %d sent, %d to go, %.1f records/s", time.Now().Format("15:04:05"),
				bar(done, total), done, total, p.Remaining, p.RatePerSecond)
			if p.ETASeconds > 0 {
				line += fmt.Sprintf(", about %s left", (time.Duration(p.ETASeconds) * time.Second).String())
			}
			fmt.Fprintf(w, "%s  (%s)\n", line, backfillState(p))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
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
