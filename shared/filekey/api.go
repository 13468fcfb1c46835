package filekey

import (
	"net/http"
	"strings"
	"time"

	"github.com/scsync/scsync/shared/ids"
)

// States of a file in the cloud.
const (
	// StateUploading: an upload is open; the object is not (yet) trusted.
	StateUploading = "uploading"
	// StatePresent: stored and verified (size and SHA-256); downloadable.
	StatePresent = "present"
	// StateFailed: verification failed (Reason says why); begin again.
	StateFailed = "failed"
	// StateArchiving: the object is being copied to cold storage.
	StateArchiving = "archiving"
	// StateArchived: the object is in cold storage only (retention
	// backup); restore it to download it.
	StateArchived = "archived"
	// StateRestoring: the object is being copied back from cold storage.
	StateRestoring = "restoring"
	// StateDeleted: the object was deleted from S3 (no live record named
	// the file for the grace period; Reason says so). The row is the
	// trail; a new upload of the file is accepted.
	StateDeleted = "deleted"
)

// Upload modes.
const (
	// ModeSingle: one presigned PUT of the whole file.
	ModeSingle = "single"
	// ModeMultipart: presigned UploadPart PUTs of PartSize bytes each.
	ModeMultipart = "multipart"
)

// Paths of the file API, all under one clinic. {sha256} is lowercase hex.
//
//	POST   /v1/clinics/{clinic}/files/{sha256}/upload             BeginRequest → BeginResponse
//	DELETE /v1/clinics/{clinic}/files/{sha256}/upload             abort the open upload → File
//	POST   /v1/clinics/{clinic}/files/{sha256}/upload/part-urls   PartURLsRequest → PartURLsResponse
//	GET    /v1/clinics/{clinic}/files/{sha256}/upload/parts       → PartsResponse
//	POST   /v1/clinics/{clinic}/files/{sha256}/upload/complete    → File (present)
//	GET    /v1/clinics/{clinic}/files/{sha256}                    → File (?check=true: after asking S3)
//	POST   /v1/clinics/{clinic}/files/check                       CheckRequest → CheckResponse
//	GET    /v1/clinics/{clinic}/files/{sha256}/download           → DownloadResponse
//	POST   /v1/clinics/{clinic}/files/{sha256}/restore            bring an archived file back → File
const (
	PathFile     = "/v1/clinics/{clinic}/files/{sha256}"
	PathUpload   = PathFile + "/upload"
	PathPartURLs = PathUpload + "/part-urls"
	PathParts    = PathUpload + "/parts"
	PathComplete = PathUpload + "/complete"
	PathDownload = PathFile + "/download"
	PathRestore  = PathFile + "/restore"
	// PathCheck checks many files at once (verify's file sweep). It sits
	// beside {sha256} as a POST: a cloud that predates it answers 405
	// (its GET …/files/{sha256} matches the path), which tells the
	// clinic to check file by file.
	PathCheck = "/v1/clinics/{clinic}/files/check"
)

// MaxCheck bounds the SHA-256s of one CheckRequest.
const MaxCheck = 256

// Path fills a Path* pattern with clinic and sha.
func Path(pattern string, clinic ids.ID, sha string) string {
	return strings.NewReplacer("{clinic}", clinic.String(), "{sha256}", sha).Replace(pattern)
}

// Presigned is one HTTP request the clinic sends straight to S3: Method to
// URL with exactly the Header given (they are part of the signature, e.g.
// Content-Length and x-amz-checksum-sha256; leaving one out or changing it
// makes S3 refuse the request). It is valid until ExpiresAt.
type Presigned struct {
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Header    map[string]string `json:"header,omitempty"`
	ExpiresAt time.Time         `json:"expires_at"`
}

// Request builds the http.Request headers of p onto h (Content-Length is
// not a header in Go: the caller sets http.Request.ContentLength).
func (p Presigned) Request(h http.Header) {
	for k, v := range p.Header {
		if http.CanonicalHeaderKey(k) == "Content-Length" || http.CanonicalHeaderKey(k) == "Host" {
			continue
		}
		h.Set(k, v)
	}
}

// BeginRequest opens (or resumes) the upload of the file named by the path.
type BeginRequest struct {
	Size        int64  `json:"size"`
	ContentType string `json:"content_type,omitempty"`
}

// BeginResponse says what to send. Present means the cloud already holds the
// verified file: send nothing. Otherwise Mode is single (send Put, then
// complete) or multipart (fetch part URLs for the parts ListParts does not
// show, send them, then complete). UploadID identifies the open multipart
// upload; when it differs from the one a client recorded, the client's
// record of sent parts is stale.
type BeginResponse struct {
	SHA256    string     `json:"sha256"`
	State     string     `json:"state"`
	Present   bool       `json:"present"`
	Size      int64      `json:"size"`
	Mode      string     `json:"mode,omitempty"`
	UploadID  string     `json:"upload_id,omitempty"`
	PartSize  int64      `json:"part_size,omitempty"`
	PartCount int        `json:"part_count,omitempty"`
	Put       *Presigned `json:"put,omitempty"`
}

// PartURLsRequest asks for presigned UploadPart requests.
type PartURLsRequest struct {
	Parts []int `json:"parts"`
}

// PartURL is the presigned request of one part (Size bytes, pinned by the
// signature).
type PartURL struct {
	Number int       `json:"number"`
	Size   int64     `json:"size"`
	Put    Presigned `json:"put"`
}

// PartURLsResponse answers PartURLsRequest.
type PartURLsResponse struct {
	UploadID string    `json:"upload_id"`
	Parts    []PartURL `json:"parts"`
}

// Part is one part S3 holds for an open multipart upload.
type Part struct {
	Number int    `json:"number"`
	Size   int64  `json:"size"`
	ETag   string `json:"etag"`
}

// PartsResponse lists the parts S3 holds, in number order.
type PartsResponse struct {
	UploadID  string `json:"upload_id"`
	PartSize  int64  `json:"part_size"`
	PartCount int    `json:"part_count"`
	Parts     []Part `json:"parts"`
}

// File is the cloud's view of one file.
type File struct {
	SHA256      string     `json:"sha256"`
	State       string     `json:"state"`
	Size        int64      `json:"size"`
	ContentType string     `json:"content_type,omitempty"`
	Mode        string     `json:"mode,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	VerifiedAt  *time.Time `json:"verified_at,omitempty"`
	// UnsyncedAt is set while no live record of the clinic names the file
	// (un-synced or deleted in the cloud): it cannot be downloaded, and it
	// is deleted from S3 once the grace period has passed.
	UnsyncedAt *time.Time `json:"unsynced_at,omitempty"`
	// ArchivedAt is when the object went to cold storage (state archived).
	ArchivedAt *time.Time `json:"archived_at,omitempty"`
	// RemovedAt is when the object was deleted from S3 (state deleted).
	RemovedAt *time.Time `json:"removed_at,omitempty"`
}

// CheckRequest asks the cloud to check up to MaxCheck files as
// GET …/files/{sha256}?check=true checks one. Duplicates are allowed.
type CheckRequest struct {
	SHA256 []string `json:"sha256"`
}

// CheckResponse answers CheckRequest: one entry per requested SHA-256, in
// the request's order.
type CheckResponse struct {
	Files []CheckedFile `json:"files"`
}

// CheckedFile is one file of a CheckResponse: File is what the single check
// answers (after asking S3), or nil with Code when the cloud has no such
// file of the clinic (httpapi.CodeNotFound, the code the single route
// answers with a 404).
type CheckedFile struct {
	SHA256 string `json:"sha256"`
	File   *File  `json:"file,omitempty"`
	Code   string `json:"code,omitempty"`
}

// DownloadResponse is a presigned GET of a present file. The client may add
// a Range header to resume; it must check Size and SHA256 before use.
type DownloadResponse struct {
	SHA256      string    `json:"sha256"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type,omitempty"`
	Get         Presigned `json:"get"`
}
