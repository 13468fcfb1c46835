package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/scsync/scsync/local-server/internal/verify"
	"github.com/scsync/scsync/shared/antientropy"
)

// Verify asks the running server to compare the clinic with the cloud (and
// with repair, to repair what differs) and prints what it found. It fails
// when the two sides differ and nothing was repaired, so scripts can alert.
func Verify(ctx context.Context, w io.Writer, base string, repair bool) error {
	url := base + "/v1/verify"
	if repair {
		url += "?repair=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sc-local is not answering at %s (is it running?): %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("verify: server answered %s: %s", resp.Status, e.Message)
	}
	var r verify.Report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	fmt.Fprintf(w, "records           %d here, %d in the cloud (%d still on their way, not compared)\n", r.Records, r.CloudCount, r.InFlight)
	fmt.Fprintf(w, "buckets differing %d of %d\n", r.Buckets, antientropy.Buckets)
	fmt.Fprintf(w, "files             %d named by records\n", r.Files)
	if r.Equal {
		fmt.Fprintf(w, "result            equal (%.1fs)\n", r.Seconds)
		return nil
	}
	fmt.Fprintf(w, "result            %d difference(s) (%.1fs)\n", len(r.Differences), r.Seconds)
	failed := 0
	for _, d := range r.Differences {
		state := "not repaired (run with --repair)"
		switch {
		case d.Repaired:
			state = "repaired: " + d.Repair
		case d.Error != "":
			state = "repair failed: " + d.Error
			failed++
		case r.Repair:
			failed++
		}
		name := d.ID.String()
		if d.SHA256 != "" {
			name = d.SHA256
		}
		fmt.Fprintf(w, "  %-15s %s  wrong on the %s side: %s — %s\n", d.Kind, name, d.Side, d.What, state)
	}
	if !r.Repair || failed > 0 {
		return fmt.Errorf("verify: the clinic and the cloud differ")
	}
	return nil
}
