package admincli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// client calls the admin API with the operator's token.
type client struct {
	ctx   context.Context
	base  string
	token string
	// getenv and stdin give a new person's password (users add).
	getenv func(string) string
	stdin  io.Reader
}

// APIError is the cloud's JSON error answer.
type APIError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

// do sends in (nil: no body) and decodes the answer into a generic value,
// so --json prints exactly what the API said.
func (c *client) do(method, path string, in any) (any, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(c.ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("bad cloud URL: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Code == "" {
			e.Code, e.Message = "http_error", string(bytes.TrimSpace(b))
			if len(e.Message) > 300 {
				e.Message = e.Message[:300]
			}
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, e)
	}
	var v any
	if len(b) == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s %s: the answer is not JSON: %w", method, path, err)
	}
	return v, nil
}
