package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
)

// Cloud is what the worker needs of the cloud's file API.
type Cloud interface {
	BeginUpload(ctx context.Context, sha string, size int64, contentType string) (filekey.BeginResponse, error)
	PartURLs(ctx context.Context, sha string, parts []int) (filekey.PartURLsResponse, error)
	ListParts(ctx context.Context, sha string) (filekey.PartsResponse, error)
	Complete(ctx context.Context, sha string) (filekey.File, error)
	DownloadURL(ctx context.Context, sha string) (filekey.DownloadResponse, error)
}

// Client calls the file API of one cloud as one clinic (bearer token).
// Its answers are small JSON; file bytes never go through it.
type Client struct {
	base   string
	token  string
	clinic ids.ID
	http   *http.Client
}

// Timeouts of the file API calls. Complete may hash a large multipart
// upload in the cloud before it answers.
const (
	callTimeout     = 30 * time.Second
	checkTimeout    = 2 * time.Minute // a batch of checks: the cloud asks S3 about each file
	completeTimeout = 30 * time.Minute
)

// NewClient returns a client of the cloud at baseURL for clinic. hc may be
// nil (a default client; calls carry their own timeouts).
func NewClient(baseURL, token string, clinic ids.ID, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, clinic: clinic, http: hc}
}

var _ Cloud = (*Client)(nil)

// BeginUpload opens or resumes the upload of sha.
func (c *Client) BeginUpload(ctx context.Context, sha string, size int64, contentType string) (filekey.BeginResponse, error) {
	var out filekey.BeginResponse
	err := c.do(ctx, callTimeout, http.MethodPost, filekey.PathUpload, sha, filekey.BeginRequest{Size: size, ContentType: contentType}, &out)
	return out, err
}

// PartURLs asks for presigned part PUTs.
func (c *Client) PartURLs(ctx context.Context, sha string, parts []int) (filekey.PartURLsResponse, error) {
	var out filekey.PartURLsResponse
	err := c.do(ctx, callTimeout, http.MethodPost, filekey.PathPartURLs, sha, filekey.PartURLsRequest{Parts: parts}, &out)
	return out, err
}

// ListParts lists the parts S3 holds.
func (c *Client) ListParts(ctx context.Context, sha string) (filekey.PartsResponse, error) {
	var out filekey.PartsResponse
	err := c.do(ctx, callTimeout, http.MethodGet, filekey.PathParts, sha, nil, &out)
	return out, err
}

// Complete finishes the upload; the cloud verifies the file.
func (c *Client) Complete(ctx context.Context, sha string) (filekey.File, error) {
	var out filekey.File
	err := c.do(ctx, completeTimeout, http.MethodPost, filekey.PathComplete, sha, nil, &out)
	return out, err
}

// DownloadURL asks for a presigned GET of a present file.
func (c *Client) DownloadURL(ctx context.Context, sha string) (filekey.DownloadResponse, error) {
	var out filekey.DownloadResponse
	err := c.do(ctx, callTimeout, http.MethodGet, filekey.PathDownload, sha, nil, &out)
	return out, err
}

// Stat returns the cloud's view of sha.
func (c *Client) Stat(ctx context.Context, sha string) (filekey.File, error) {
	var out filekey.File
	err := c.do(ctx, callTimeout, http.MethodGet, filekey.PathFile, sha, nil, &out)
	return out, err
}

// Check returns the cloud's view of sha after the cloud asked S3 whether
// a present file's object is still there with its size and SHA-256 (a
// missing or different object comes back failed; verify's file sweep).
func (c *Client) Check(ctx context.Context, sha string) (filekey.File, error) {
	var out filekey.File
	err := c.do(ctx, callTimeout, http.MethodGet, filekey.PathFile+"?check=true", sha, nil, &out)
	return out, err
}

// CheckFiles is Check of up to filekey.MaxCheck files in one request
// (POST …/files/check): one answer per SHA-256, in order; a file the cloud
// does not have comes back with no File and Code not_found. A cloud that
// predates the route answers a *CloudError (405, or 404).
func (c *Client) CheckFiles(ctx context.Context, shas []string) ([]filekey.CheckedFile, error) {
	var out filekey.CheckResponse
	if err := c.do(ctx, checkTimeout, http.MethodPost, filekey.PathCheck, "", filekey.CheckRequest{SHA256: shas}, &out); err != nil {
		return nil, err
	}
	if len(out.Files) != len(shas) {
		return nil, fmt.Errorf("transfer: check of %d files answered %d", len(shas), len(out.Files))
	}
	for i, f := range out.Files {
		if !strings.EqualFold(f.SHA256, shas[i]) || (f.File == nil && f.Code == "") {
			return nil, fmt.Errorf("transfer: check answer %d is not of %s", i, shas[i])
		}
	}
	return out.Files, nil
}

// Abort gives up the open upload of sha.
func (c *Client) Abort(ctx context.Context, sha string) (filekey.File, error) {
	var out filekey.File
	err := c.do(ctx, callTimeout, http.MethodDelete, filekey.PathUpload, sha, nil, &out)
	return out, err
}

// maxAnswer bounds an answer of the file API (part URLs of 100 parts are
// about 100 KiB).
const maxAnswer = 8 << 20

func (c *Client) do(ctx context.Context, timeout time.Duration, method, pattern, sha string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+filekey.Path(pattern, c.clinic, sha), body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("transfer: %s %s: %w", method, pattern, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("transfer: %s %s: read answer: %w", method, pattern, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &CloudError{Status: resp.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Code == "" {
			e.Code, e.Message = PlainCode(resp.StatusCode), strings.TrimSpace(string(b[:min(len(b), 200)]))
		}
		return e
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("transfer: %s %s: decode answer: %w", method, pattern, err)
	}
	return nil
}
