// Package filekey names image files in the object store and carries the JSON
// of the file API spoken between sc-local and sc-cloud.
//
// Files are content-addressed: the object key is derived from the clinic and
// the SHA-256 of the bytes (Key), never chosen by a client, so an original can
// never be overwritten with other content (M19), a re-upload is a no-op, and
// a clinic can only ever be handed URLs under its own prefix. The cloud hands
// out presigned S3 requests (Presigned); the bytes go straight between the
// clinic and S3. See docs/files.md for the whole flow.
package filekey

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/scsync/scsync/shared/ids"
)

// Size units.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

// Multipart limits of S3 that every layout must respect.
const (
	// MinPartSize is the smallest part the cloud hands out. S3's floor is
	// 5 MiB (except the last part); 8 MiB keeps the part count of large
	// files low without costing memory on the clinic, which streams parts.
	MinPartSize = 8 * MiB
	// MaxParts is S3's limit on the parts of one upload.
	MaxParts = 10000
	// MaxPartSize is S3's limit on one part.
	MaxPartSize = 5 * GiB
)

// ParseSHA256 checks that s is a SHA-256 in hex (64 digits) and returns it
// in lowercase, the only form used in keys and rows.
func ParseSHA256(s string) (string, error) {
	if len(s) != 64 {
		return "", fmt.Errorf("%w: %d characters, want 64", ErrInvalidSHA256, len(s))
	}
	s = strings.ToLower(s)
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("%w: not hex", ErrInvalidSHA256)
	}
	return s, nil
}

// ClinicPrefix is the key prefix under which all of clinic's files live.
func ClinicPrefix(clinic ids.ID) string { return "clinics/" + clinic.String() + "/" }

// Key is the object key of the file with SHA-256 sha (lowercase hex) of
// clinic: clinics/<clinic id>/sha256/<hex>. It is always derived on the
// server from the authenticated clinic, never taken from a request.
func Key(clinic ids.ID, sha string) string {
	return ClinicPrefix(clinic) + "sha256/" + sha
}

// ParseKey is the inverse of Key.
func ParseKey(key string) (ids.ID, string, error) {
	rest, ok := strings.CutPrefix(key, "clinics/")
	if !ok {
		return 0, "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	c, sha, ok := strings.Cut(rest, "/sha256/")
	if !ok {
		return 0, "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	clinic, err := ids.Parse(c)
	if err != nil || clinic == 0 {
		return 0, "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	sha, err = ParseSHA256(sha)
	if err != nil || Key(clinic, sha) != key {
		return 0, "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	return clinic, sha, nil
}

// PartSizeFor returns the part size for a file of size bytes: preferred
// (at least MinPartSize), grown in whole MiB when the file would otherwise
// need more than MaxParts parts.
func PartSizeFor(size, preferred int64) int64 {
	ps := max(preferred, MinPartSize)
	if need := (size + MaxParts - 1) / MaxParts; need > ps {
		ps = (need + MiB - 1) / MiB * MiB
	}
	return ps
}

// PartCount is the number of parts of a file of size bytes cut in parts of
// partSize (every part full except the last; an empty file has one empty
// part only in a single PUT, never in multipart, so it counts 0 here).
func PartCount(size, partSize int64) int {
	if size <= 0 || partSize <= 0 {
		return 0
	}
	return int((size + partSize - 1) / partSize)
}

// PartRange is the byte range of part number (1-based) of a file of size
// bytes cut in parts of partSize. ok is false for a number outside the file.
func PartRange(size, partSize int64, number int) (offset, length int64, ok bool) {
	if number < 1 || number > PartCount(size, partSize) {
		return 0, 0, false
	}
	offset = int64(number-1) * partSize
	return offset, min(partSize, size-offset), true
}
