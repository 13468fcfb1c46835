// Package search is the patient search both servers offer their viewers
// (issue 21): the query a person types, which field it searches, the key
// its results are ordered by and the opaque cursor of the next page
// (keyset paging, so every patient of a large clinic can be reached).
//
// The stores run it against indexes of their own (docs/viewer.md): both
// fold ASCII letters to lower case only (SQLite's lower() and PostgreSQL's
// lower() under the "C" collation do the same), and every search is a
// prefix of the field, so an index range answers it.
package search

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// Fields a search can look in.
const (
	ByName      = "name"
	ByChartNo   = "chart_no"
	ByBirthDate = "birth_date"
)

// Limits of a page.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// ErrInvalid wraps every invalid query.
var ErrInvalid = errors.New("search: invalid query")

// Query is one page of a search. An empty Prefix lists every patient in the
// field's order.
type Query struct {
	By     string
	Prefix string // folded (Fold)
	Limit  int
	// After is where the previous page ended (zero: the first page).
	After Cursor
}

// Cursor is the position after the last row of a page: its key in the
// searched field and its id.
type Cursor struct {
	Key string `json:"k"`
	ID  ids.ID `json:"i"`
}

// IsZero reports the first page.
func (c Cursor) IsZero() bool { return c.ID == 0 && c.Key == "" }

// Encode is the cursor as the page's "next" token.
func (c Cursor) Encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor reads a "next" token ("" is the first page).
func DecodeCursor(s string) (Cursor, error) {
	var c Cursor
	if s == "" {
		return c, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil || c.ID <= 0 {
		return Cursor{}, fmt.Errorf("after is not a cursor this server gave: %w", ErrInvalid)
	}
	return c, nil
}

var (
	dateRE  = regexp.MustCompile(`^\d{4}(-\d{0,2}(-\d{0,2})?)?$`)
	digitRE = regexp.MustCompile(`\d`)
)

// Parse reads a search: by is "name", "chart_no", "birth_date" or ""
// (guess from q: a date such as 1980-05 or 1980-05-17 is a birth date,
// text with a digit a chart number, else a name); after is the previous
// page's next token.
func Parse(by, q, after string, limit int) (Query, error) {
	q = strings.TrimSpace(q)
	if len(q) > 200 || !utf8.ValidString(q) {
		return Query{}, fmt.Errorf("q must be valid text of at most 200 bytes: %w", ErrInvalid)
	}
	if by == "" {
		switch {
		case q != "" && dateRE.MatchString(q) && strings.Contains(q, "-"):
			by = ByBirthDate
		case digitRE.MatchString(q):
			by = ByChartNo
		default:
			by = ByName
		}
	}
	switch by {
	case ByName, ByChartNo, ByBirthDate:
	default:
		return Query{}, fmt.Errorf("by must be name, chart_no or birth_date: %w", ErrInvalid)
	}
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return Query{}, fmt.Errorf("limit must be 1..%d: %w", MaxLimit, ErrInvalid)
	}
	c, err := DecodeCursor(after)
	if err != nil {
		return Query{}, err
	}
	return Query{By: by, Prefix: Fold(q), Limit: limit, After: c}, nil
}

// Fold lower-cases ASCII letters only, as the stores' indexes do.
func Fold(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// Upper is the exclusive upper bound of the keys that start with prefix in
// byte order (SQLite's BINARY collation, PostgreSQL's "C"): no valid UTF-8
// text after prefix sorts above U+10FFFF.
func Upper(prefix string) string { return prefix + "\U0010FFFF" }

// Key is the folded value of a patient's searched field.
func Key(by, name, chartNo, birthDate string) string {
	switch by {
	case ByChartNo:
		return Fold(chartNo)
	case ByBirthDate:
		return birthDate
	default:
		return Fold(name)
	}
}

// Page is one page of results.
type Page[T any] struct {
	Items []T    `json:"items"`
	By    string `json:"by"`
	// Next is the after of the next page; "" when this is the last.
	Next string `json:"next,omitempty"`
}

// FromURL reads a search from a request's query: by, q, after, limit.
func FromURL(v url.Values) (Query, error) {
	limit := 0
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return Query{}, fmt.Errorf("limit must be a number: %w", ErrInvalid)
		}
		limit = n
		if n == 0 {
			return Query{}, fmt.Errorf("limit must be 1..%d: %w", MaxLimit, ErrInvalid)
		}
	}
	return Parse(v.Get("by"), v.Get("q"), v.Get("after"), limit)
}

// Scope narrows db (already limited to one clinic's live patients) to the
// page q asks for over the folded column key: the prefix as a range of
// its index, the rows after the cursor, in (key, id) order, q.Limit of
// them (DefaultLimit when unset). Both stores run it, so both page alike.
func Scope(db *gorm.DB, key string, q Query) *gorm.DB {
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	if q.Prefix != "" {
		db = db.Where(key+" >= ? AND "+key+" < ?", q.Prefix, Upper(q.Prefix))
	}
	if !q.After.IsZero() {
		db = db.Where("("+key+", id) > (?, ?)", q.After.Key, q.After.ID)
	}
	return db.Order(key + ", id").Limit(q.Limit)
}

// HTTPError maps an invalid query to a 400 (code bad_request) with what
// was wrong; other errors pass through.
func HTTPError(err error) error {
	if errors.Is(err, ErrInvalid) {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "%s", strings.TrimSuffix(err.Error(), ": "+ErrInvalid.Error()))
	}
	return err
}

// NewPage is the answer holding items (never null in JSON) and, when there
// is a next page, its cursor.
func NewPage[T any](items []T, by string, next Cursor) Page[T] {
	p := Page[T]{Items: items, By: by}
	if p.Items == nil {
		p.Items = []T{}
	}
	if !next.IsZero() {
		p.Next = next.Encode()
	}
	return p
}
