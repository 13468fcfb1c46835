package files

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
)

var (
	// ErrConfig wraps every configuration error.
	ErrConfig = errors.New("files: invalid config")
	// ErrNotFound: the clinic has no such file.
	ErrNotFound = errors.New("files: no such file")
	// ErrNotPresent: the file is not stored and verified.
	ErrNotPresent = errors.New("files: file not present")
	// ErrInvalidSize: a negative size or one over Config.MaxSize.
	ErrInvalidSize = errors.New("files: invalid size")
	// ErrInvalidContentType: a content type that is not short printable ASCII.
	ErrInvalidContentType = errors.New("files: invalid content_type")
	// ErrSizeConflict: an open upload of the file declared another size.
	ErrSizeConflict = errors.New("files: size conflict")
	// ErrNotUploading: no upload of the file is open.
	ErrNotUploading = errors.New("files: no open upload")
	// ErrNotMultipart: a part operation on a single-PUT upload.
	ErrNotMultipart = errors.New("files: not a multipart upload")
	// ErrInvalidPart: a part number outside the file's layout.
	ErrInvalidPart = errors.New("files: invalid part number")
	// ErrNotUploaded: complete of a single PUT that S3 does not hold.
	ErrNotUploaded = errors.New("files: object not uploaded")
	// ErrUploadGone: the multipart upload no longer exists in S3.
	ErrUploadGone = errors.New("files: multipart upload gone")
	// ErrVerify: the stored object is not the declared file (see VerifyError).
	ErrVerify = errors.New("files: verification failed")
	// ErrUnsynced: no live record names the file (un-synced or deleted in
	// the cloud); it cannot be downloaded.
	ErrUnsynced = errors.New("files: file unsynced")
	// ErrArchived: the file is in cold storage; restore it first.
	ErrArchived = errors.New("files: file archived")
	// ErrArchiving, ErrRestoring: a copy between storages is in progress.
	ErrArchiving = errors.New("files: file being archived")
	ErrRestoring = errors.New("files: file being restored")
	// ErrDeleted: the object was deleted from S3 after the grace period.
	ErrDeleted = errors.New("files: file deleted")
	// ErrNotArchived: restore of a file that is not archived.
	ErrNotArchived = errors.New("files: file not archived")
	// ErrNoColdStorage: no cold bucket is configured.
	ErrNoColdStorage = errors.New("files: no cold storage configured")
	// ErrTooManyFiles: a check names more than filekey.MaxCheck files.
	ErrTooManyFiles = errors.New("files: too many files")
)

// PartsMissingError lists the parts S3 does not hold at complete.
type PartsMissingError struct {
	Missing []int // first few missing part numbers
	Count   int   // how many are missing
}

func (e *PartsMissingError) Error() string {
	return fmt.Sprintf("files: %d parts missing (first: %v)", e.Count, e.Missing)
}

// VerifyError says why a stored object was rejected.
type VerifyError struct{ Reason string }

func (e *VerifyError) Error() string { return "files: verification failed: " + e.Reason }

// Unwrap makes errors.Is(err, ErrVerify) true.
func (e *VerifyError) Unwrap() error { return ErrVerify }

// APIError maps a service error to its HTTP status and stable code (for
// other packages serving file operations); other errors pass through.
func APIError(err error) error { return apiError(err) }

// apiError maps a service error to its HTTP status and stable code; other
// errors pass through (the caller's wrapper answers them with a 500).
func apiError(err error) error {
	var pm *PartsMissingError
	var ve *VerifyError
	switch {
	case errors.Is(err, filekey.ErrInvalidSHA256):
		return httpapi.Errorf(http.StatusBadRequest, filekey.CodeInvalidSHA256, "sha256 must be 64 hex digits")
	case errors.Is(err, ErrTooManyFiles):
		return httpapi.Errorf(http.StatusBadRequest, filekey.CodeTooManyFiles, "%s", detail(err, ErrTooManyFiles))
	case errors.Is(err, ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such file")
	case errors.Is(err, ErrNotPresent):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeNotPresent, "the file is not stored and verified yet")
	case errors.Is(err, ErrInvalidSize):
		return httpapi.Errorf(http.StatusBadRequest, filekey.CodeInvalidSize, "%s", detail(err, ErrInvalidSize))
	case errors.Is(err, ErrInvalidContentType):
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "content_type %s", detail(err, ErrInvalidContentType))
	case errors.Is(err, ErrSizeConflict):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeSizeConflict, "%s", detail(err, ErrSizeConflict))
	case errors.Is(err, ErrNotUploading):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeNotUploading, "no upload of this file is open; begin one")
	case errors.Is(err, ErrNotMultipart):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeNotMultipart, "the open upload is a single PUT")
	case errors.Is(err, ErrInvalidPart):
		return httpapi.Errorf(http.StatusBadRequest, filekey.CodeInvalidPart, "%s", detail(err, ErrInvalidPart))
	case errors.Is(err, ErrNotUploaded):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeNotUploaded, "the object is not in the store; PUT it first")
	case errors.Is(err, ErrUploadGone):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeUploadGone, "the multipart upload was aborted; begin again")
	case errors.Is(err, ErrUnsynced):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeUnsynced, "no live record names this file any more (un-synced or deleted in the cloud); sync a record naming it again to reach it")
	case errors.Is(err, ErrArchived):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeArchived, "the file is in cold storage (retention backup); POST %s to bring it back, then download it", filekey.PathRestore)
	case errors.Is(err, ErrArchiving):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeArchiving, "the file is being moved to cold storage; retry later")
	case errors.Is(err, ErrRestoring):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeRestoring, "the file is being restored from cold storage; retry in a while")
	case errors.Is(err, ErrDeleted):
		return httpapi.Errorf(http.StatusGone, filekey.CodeDeleted, "the file was deleted from the cloud after its records were un-synced; the clinic uploads it again when a record naming it syncs again")
	case errors.Is(err, ErrNotArchived):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeNotArchived, "the file is not in cold storage")
	case errors.Is(err, ErrNoColdStorage):
		return httpapi.Errorf(http.StatusConflict, filekey.CodeNoColdStorage, "the cloud has no cold storage (files.cold_bucket) configured")
	case errors.As(err, &pm):
		return httpapi.Errorf(http.StatusConflict, filekey.CodePartsMissing, "%d parts missing, first %v", pm.Count, pm.Missing)
	case errors.As(err, &ve):
		return httpapi.Errorf(http.StatusUnprocessableEntity, filekey.CodeVerifyFailed, "%s", ve.Reason)
	case s3Unavailable(err):
		return httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the object store is not reachable right now; retry later")
	}
	return err
}

// s3Unavailable reports an object store that could not be reached or
// answered with a server error: a passing condition, so 503, not 500.
func s3Unavailable(err error) bool {
	var send *smithyhttp.RequestSendError
	if errors.As(err, &send) {
		return true
	}
	var resp *smithyhttp.ResponseError
	return errors.As(err, &resp) && resp.HTTPStatusCode() >= 500
}

// detail is err's text without the sentinel's, so a message reads well.
func detail(err, sentinel error) string {
	return strings.TrimPrefix(err.Error(), sentinel.Error()+": ")
}
