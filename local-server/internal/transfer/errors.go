package transfer

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

var (
	// ErrNotFound: no such transfer.
	ErrNotFound = errors.New("transfer: not found")
	// ErrBusy: the transfer is already running.
	ErrBusy = errors.New("transfer: already running")
	// ErrChecksum: downloaded bytes do not have the expected SHA-256.
	ErrChecksum = errors.New("transfer: checksum mismatch")
	// ErrLocalChanged: the local file is no longer the one that was queued.
	ErrLocalChanged = errors.New("transfer: local file changed")
)

// CloudError is an error answer of the cloud's file API.
type CloudError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// PlainCode is a CloudError's Code for an answer of status whose body is
// not a JSON error (a proxy's page, a mux's plain 404).
func PlainCode(status int) string { return "http_" + strconv.Itoa(status) }

func (e *CloudError) Error() string {
	return fmt.Sprintf("transfer: cloud answered %d %s: %s", e.Status, e.Code, e.Message)
}

// S3Error is an error answer of S3 to a presigned request.
type S3Error struct {
	Status int
	Code   string // from the XML body, e.g. SignatureDoesNotMatch
}

func (e *S3Error) Error() string { return fmt.Sprintf("transfer: S3 answered %d %s", e.Status, e.Code) }

// permanentError marks an error that retrying cannot fix; the transfer
// goes to failed.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// isPermanent reports whether err cannot be cured by retrying: marked so,
// or a cloud answer that the request itself is wrong (400, 413). Network
// errors, 5xx, 401/403 (a token being rotated), 404/409 (the file is not
// in the cloud yet, an upload was swept) are transient.
func isPermanent(err error) bool {
	var p *permanentError
	if errors.As(err, &p) {
		return true
	}
	var ce *CloudError
	if errors.As(err, &ce) {
		return ce.Status == http.StatusBadRequest || ce.Status == http.StatusRequestEntityTooLarge
	}
	return false
}

func cloudCode(err error) string {
	var ce *CloudError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return ""
}
