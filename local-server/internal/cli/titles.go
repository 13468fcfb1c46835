package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/scsync/scsync/shared/events"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// titleLookupTimeout bounds one record read, so a slow server delays a
// watch line by little; the line is then printed without the title.
const titleLookupTimeout = 3 * time.Second

// titles finds the titles of the records that events name, as the viewer
// shows them (titleOf in shared/viewer/static/app.js): the record's name,
// title, description or file name. Events carry no titles (they are
// notifications, not data, and travel through RabbitMQ and the cloud), so
// each record is read from the running server — GET /v1/{collection}/{id},
// in the audit log as a read by "service", the machine's token — once, and
// again after an event says its data changed. It remembers the last n.
type titles struct {
	base  string
	n     int
	known map[titleKey]string
	ring  []titleKey
	next  int
}

type titleKey struct {
	kind   string
	record ids.ID
}

func newTitles(base string, n int) *titles {
	return &titles{base: base, n: n, known: make(map[titleKey]string, n), ring: make([]titleKey, n)}
}

// of returns the title of the record e is about, or "" (no record, a kind
// the API does not serve, the record gone, the server not answering).
func (t *titles) of(ctx context.Context, e events.Event) string {
	spec, ok := records.SpecOf(wire.Kind(e.Kind))
	if e.Record == 0 || !ok {
		return ""
	}
	k := titleKey{e.Kind, e.Record}
	title, cached := t.known[k]
	switch e.Type {
	case events.TypeSaved, events.TypeChanged, events.TypeConflict:
		cached = false // the data, and so perhaps the title, changed
	}
	if cached {
		return title
	}
	title, err := t.read(ctx, spec.Table, e.Record)
	if err != nil && !errors.Is(err, errGone) {
		return title // not remembered: the next event tries again
	}
	t.remember(k, title)
	return title
}

func (t *titles) remember(k titleKey, title string) {
	if _, ok := t.known[k]; !ok {
		if old := t.ring[t.next]; old != (titleKey{}) {
			delete(t.known, old)
		}
		t.ring[t.next], t.next = k, (t.next+1)%t.n
	}
	t.known[k] = title
}

// errGone: the record is not there (deleted, un-synced, never here).
var errGone = errors.New("cli: record not found")

func (t *titles) read(ctx context.Context, collection string, id ids.ID) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, titleLookupTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/v1/"+collection+"/"+id.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return "", errGone
	case resp.StatusCode != http.StatusOK:
		return "", errors.New(resp.Status)
	}
	var rec struct {
		Data recordTitle `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		return "", err
	}
	return rec.Data.title(), nil
}

// recordTitle holds the fields a record's title comes from, in the
// viewer's order.
type recordTitle struct {
	Name        string `json:"name"`
	Title       string `json:"title"`
	Description string `json:"description"`
	FileName    string `json:"file_name"`
}

func (r recordTitle) title() string {
	for _, s := range []string{r.Name, r.Title, r.Description, r.FileName} {
		if s = strings.TrimSpace(s); s != "" {
			return s
		}
	}
	return ""
}
