// Package cloudapi is sc-local's client of the sc-cloud REST API, used to
// pull changes by cloud_seq (gap fill, catch-up and full re-sync).
package cloudapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/scsync/scsync/shared/antientropy"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// Client calls one cloud for one clinic.
type Client struct {
	base   string
	token  string
	clinic ids.ID
	http   *http.Client
	// peer is the protocol range the cloud stated on its last pull answer
	// (wire.Legacy when it stated none: a release before ranges).
	peer *atomic.Pointer[wire.Range]
}

// New returns a client of the cloud at baseURL, authenticated as clinic.
func New(baseURL, token string, clinic ids.ID) *Client {
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, clinic: clinic,
		http: &http.Client{Timeout: 30 * time.Second}, peer: &atomic.Pointer[wire.Range]{}}
}

// WithTLS makes the client trust cfg's roots (a private CA of the cloud).
func (c *Client) WithTLS(cfg *tls.Config) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.Clone()
	c.http.Transport = tr
	return c
}

// Error is an error answer of the cloud.
type Error struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("cloudapi: %d %s: %s", e.Status, e.Code, e.Message)
}

// Changes returns the clinic's changes after cloud_seq since. The request
// states the protocol range this build speaks; the cloud answers in the
// newest version both speak and states its own range (CloudProtocols).
func (c *Client) Changes(ctx context.Context, since int64, limit int) (wire.ChangesPage, error) {
	var page wire.ChangesPage
	q := url.Values{"since": {strconv.FormatInt(since, 10)}, "limit": {strconv.Itoa(limit)}, "ack": {"true"}}
	h, err := c.getH(ctx, "/v1/clinics/"+c.clinic.String()+"/changes?"+q.Encode(), &page)
	if err != nil {
		return page, err
	}
	if p, _, err := wire.RangeOfHTTP(h); err == nil {
		c.peer.Store(&p)
	}
	for i := range page.Changes {
		if err := page.Changes[i].Validate(); err != nil {
			return page, fmt.Errorf("cloudapi: change %d: %w", i, err)
		}
		if page.Changes[i].Clinic != c.clinic {
			return page, fmt.Errorf("cloudapi: change for clinic %s in clinic %s's feed", page.Changes[i].Clinic, c.clinic)
		}
	}
	return page, nil
}

// Ping checks the cloud API answers.
func (c *Client) Ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cloud /healthz answered %d", resp.StatusCode)
	}
	return nil
}

// CloudProtocols is the protocol range the cloud stated on its last pull
// answer; ok is false before the first one.
func (c *Client) CloudProtocols() (wire.Range, bool) {
	p := c.peer.Load()
	if p == nil {
		return wire.Range{}, false
	}
	return *p, true
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	_, err := c.getH(ctx, path, out)
	return err
}

// getH is get returning the answer's headers.
func (c *Client) getH(ctx context.Context, path string, out any) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	wire.Local().SetHTTP(req.Header)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cloudapi: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("cloudapi: read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Status: resp.StatusCode}
		_ = json.Unmarshal(body, e)
		return nil, e
	}
	if err := json.Unmarshal(body, out); err != nil {
		return nil, fmt.Errorf("cloudapi: decode: %w", err)
	}
	return resp.Header, nil
}

// BeginBackup announces a database snapshot and returns the presigned PUT
// to send it with (M27).
func (c *Client) BeginBackup(ctx context.Context, b filekey.BackupBegin) (filekey.BackupUpload, error) {
	var out filekey.BackupUpload
	err := c.do(ctx, http.MethodPost, filekey.PathBackups, "", b, &out)
	return out, err
}

// CompleteBackup asks the cloud to verify the uploaded snapshot and list it.
func (c *Client) CompleteBackup(ctx context.Context, id ids.ID) (filekey.Backup, error) {
	var out filekey.Backup
	err := c.do(ctx, http.MethodPost, filekey.PathBackupComplete, id.String(), nil, &out)
	return out, err
}

// BackupDownload returns a presigned GET of the clinic's backup id
// ("latest": the newest complete one).
func (c *Client) BackupDownload(ctx context.Context, id string) (filekey.BackupDownload, error) {
	var out filekey.BackupDownload
	err := c.do(ctx, http.MethodGet, filekey.PathBackupDownload, id, nil, &out)
	return out, err
}

// do sends a JSON request to a clinic path pattern ({clinic}, {id}).
func (c *Client) do(ctx context.Context, method, pattern, id string, in, out any) error {
	return c.doUpTo(ctx, method, pattern, id, in, out, 1<<20)
}

// doUpTo is do reading at most limit bytes of the answer.
func (c *Client) doUpTo(ctx context.Context, method, pattern, id string, in, out any, limit int64) error {
	path := strings.NewReplacer("{clinic}", c.clinic.String(), "{id}", id).Replace(pattern)
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	wire.Local().SetHTTP(req.Header)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cloudapi: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return fmt.Errorf("cloudapi: read: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		_ = json.Unmarshal(b, e)
		return e
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("cloudapi: decode: %w", err)
	}
	return nil
}

// S3Probe asks for a presigned GET of an object that does not exist, to
// check this machine reaches S3 (sc-local doctor).
func (c *Client) S3Probe(ctx context.Context, out *filekey.S3Probe) error {
	return c.do(ctx, http.MethodGet, filekey.PathS3Probe, "", nil, out)
}

// Verify asks the cloud to compare bucket hashes, or for the records of
// some buckets (anti-entropy, POST /v1/clinics/{clinic}/verify,
// docs/verify.md).
func (c *Client) Verify(ctx context.Context, req antientropy.Request) (antientropy.Answer, error) {
	var a antientropy.Answer
	// The cloud scans every record of the clinic before it answers: at a
	// million records that takes longer than the client's usual bound.
	long, hc := *c, *c.http
	hc.Timeout = verifyTimeout
	long.http = &hc
	// An answer may carry the records of many buckets: more than do's
	// bound, as much as the first protocol's GET allowed.
	err := long.doUpTo(ctx, http.MethodPost, "/v1/clinics/{clinic}/verify", "", req, &a, 64<<20)
	return a, err
}

// verifyTimeout bounds one answer of the cloud's verify route (30 s, the
// bound of every other call, is less than a big clinic's scan takes).
const verifyTimeout = 10 * time.Minute

// CloudRecord is a record as the cloud API shows it.
type CloudRecord struct {
	ID           ids.ID          `json:"id"`
	Version      version.V       `json:"version"`
	Origin       wire.Origin     `json:"origin"`
	Deleted      bool            `json:"deleted"`
	ConflictOf   ids.ID          `json:"conflict_of"`
	Conflict     bool            `json:"conflict"`
	LastChangeID ids.ID          `json:"last_change_id"`
	CloudSeq     int64           `json:"cloud_seq"`
	Unsynced     bool            `json:"unsynced"`
	CreatedAt    time.Time       `json:"created_at"`
	Data         json.RawMessage `json:"data"`
}

// Record returns one record of the clinic from the cloud (tombstones
// included); ok is false when the cloud has no such record.
func (c *Client) Record(ctx context.Context, kind wire.Kind, id ids.ID) (CloudRecord, bool, error) {
	spec, ok := records.SpecOf(kind)
	if !ok {
		return CloudRecord{}, false, fmt.Errorf("cloudapi: unknown kind %q", kind)
	}
	var r CloudRecord
	err := c.get(ctx, "/v1/clinics/"+c.clinic.String()+"/"+spec.Table+"/"+id.String(), &r)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound {
		return r, false, nil
	}
	return r, err == nil, err
}

// auditPage is the cloud's copy of the clinic's own audit chain.
type auditPage struct {
	Items []audit.Entry `json:"items"`
	Head  int64         `json:"head"`
}

// UploadAudit sends entries of the clinic's audit chain; the cloud answers
// its head (the last entry it holds).
func (c *Client) UploadAudit(ctx context.Context, es []audit.Entry) (int64, error) {
	var out struct {
		Head int64 `json:"head"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/clinics/{clinic}/audit", "", map[string]any{"entries": es}, &out)
	return out.Head, err
}

// AuditAfter returns the cloud's copy of the clinic's chain after seq, and
// the cloud's head (a restored clinic fetches what its backup lacked).
func (c *Client) AuditAfter(ctx context.Context, after int64, limit int) ([]audit.Entry, int64, error) {
	var p auditPage
	err := c.get(ctx, fmt.Sprintf("/v1/clinics/%s/audit?side=local&after=%d&limit=%d", c.clinic, after, limit), &p)
	return p.Items, p.Head, err
}
