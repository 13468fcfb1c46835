package filekey

import "errors"

var (
	// ErrInvalidSHA256 is returned for text that is not a hex SHA-256.
	ErrInvalidSHA256 = errors.New("filekey: invalid sha256")
	// ErrInvalidKey is returned for an object key not made by Key.
	ErrInvalidKey = errors.New("filekey: invalid object key")
)

// Stable error codes of the file API (the "code" of a JSON error body), in
// addition to the generic ones of shared/httpapi.
const (
	// CodeInvalidSHA256: the {sha256} of the path is not 64 hex digits.
	CodeInvalidSHA256 = "invalid_sha256"
	// CodeTooManyFiles: a check request names more than MaxCheck files.
	CodeTooManyFiles = "too_many_files"
	// CodeInvalidSize: size is negative or over the cloud's limit.
	CodeInvalidSize = "invalid_size"
	// CodeSizeConflict: an upload of this file is open with another size
	// (one SHA-256 has one size; abort the open upload to start over).
	CodeSizeConflict = "size_conflict"
	// CodeNotPresent: the file is not (yet) stored and verified in the cloud.
	CodeNotPresent = "file_not_present"
	// CodeNotUploading: no upload of this file is open (begin one first).
	CodeNotUploading = "not_uploading"
	// CodeNotMultipart: a part operation on a single-PUT upload.
	CodeNotMultipart = "not_multipart"
	// CodeInvalidPart: a part number outside 1..part_count.
	CodeInvalidPart = "invalid_part"
	// CodePartsMissing: complete was called before every part was stored;
	// the body's message lists them; send them and complete again.
	CodePartsMissing = "parts_missing"
	// CodeNotUploaded: complete of a single PUT whose object is not in S3.
	CodeNotUploaded = "not_uploaded"
	// CodeUploadGone: the multipart upload was aborted (swept as abandoned);
	// begin again to get a new one.
	CodeUploadGone = "upload_gone"
	// CodeVerifyFailed: the stored object's size or SHA-256 is not the
	// declared one; the object was deleted and the file marked failed.
	CodeVerifyFailed = "verify_failed"
	// CodeUnsynced: no live record names the file any more (its records
	// were un-synced or deleted in the cloud); syncing one again makes it
	// downloadable again, until the grace period ends and it is deleted.
	CodeUnsynced = "file_unsynced"
	// CodeArchived: the file is in cold storage (retention backup); POST
	// …/files/{sha256}/restore brings it back.
	CodeArchived = "file_archived"
	// CodeRestoring / CodeArchiving: the object is being copied between
	// storages; retry in a while.
	CodeRestoring = "file_restoring"
	CodeArchiving = "file_archiving"
	// CodeDeleted: the object was deleted from S3 after its records were
	// un-synced; the clinic uploads it again if a record names it again.
	CodeDeleted = "file_deleted"
	// CodeNotArchived: restore of a file that is not in cold storage.
	CodeNotArchived = "not_archived"
	// CodeNoColdStorage: the cloud has no cold bucket configured.
	CodeNoColdStorage = "cold_storage_unconfigured"
)
