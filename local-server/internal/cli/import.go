package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/scsync/scsync/shared/events"
)

// Import sends an NDJSON file of records (a clinic's history from its
// previous system) to the running server's bulk import, with a progress
// bar, and says how far it got.
func Import(ctx context.Context, w io.Writer, base, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	pr := &progressReader{r: f, total: st.Size(), w: w}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/import", pr)
	if err != nil {
		return err
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sc-local is not answering at %s (is it running?): %w", base, err)
	}
	defer resp.Body.Close()
	fmt.Fprintln(w)
	var out struct {
		Imported int    `json:"imported"`
		Code     string `json:"code"`
		Message  string `json:"message"`
		Line     int    `json:"line"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("import: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("import stopped at line %d (%s: %s); the %d records before it are imported — fix the line and import the rest from there",
			out.Line, out.Code, out.Message, out.Imported)
	}
	fmt.Fprintf(w, "imported %d records; the backfill sends those the sync scope covers, newest first (sc-local backfill shows it)\n", out.Imported)
	return nil
}

type progressReader struct {
	r           io.Reader
	w           io.Writer
	done, total int64
	last        time.Time
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if time.Since(p.last) > 200*time.Millisecond || err == io.EOF {
		p.last = time.Now()
		fmt.Fprintf(p.w, "\rimport %s  %s of %s", bar(p.done, p.total), events.Bytes(p.done), events.Bytes(p.total))
	}
	return n, err
}
