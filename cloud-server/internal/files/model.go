package files

import (
	"time"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
)

// File is one clinic's file, keyed by its content: (clinic_id, sha256). The
// object key is filekey.Key(ClinicID, SHA256); it is never stored, so it
// cannot drift from the row.
type File struct {
	ClinicID    ids.ID `gorm:"primaryKey;autoIncrement:false"`
	SHA256      string `gorm:"primaryKey;column:sha256;type:char(64)"`
	State       string `gorm:"not null;index"` // filekey.State*
	Size        int64  `gorm:"not null"`
	ContentType string `gorm:"not null;default:''"`
	Mode        string `gorm:"not null;default:''"` // filekey.Mode*
	// UploadID is the open S3 multipart upload ("" when none is open).
	UploadID string `gorm:"not null;default:''"`
	// UploadStartedAt is when UploadID was created; the sweep reads it.
	UploadStartedAt *time.Time `gorm:"index"`
	PartSize        int64      `gorm:"not null;default:0"`
	Reason          string     `gorm:"not null;default:''"` // why failed
	CreatedAt       time.Time  `gorm:"not null"`
	UpdatedAt       time.Time  `gorm:"not null"`
	VerifiedAt      *time.Time
	// UnsyncedAt is set while no live record of the clinic names the file
	// (MarkUnsynced, MarkSynced); ExpireUnsynced deletes the object once it
	// is older than Config.UnsyncedGrace.
	UnsyncedAt *time.Time `gorm:"index"`
	// ArchivedAt: when the object moved to the cold bucket.
	ArchivedAt *time.Time
	// RemovedAt: when the object was deleted from S3 (state deleted).
	RemovedAt *time.Time
}

// TableName is files.
func (File) TableName() string { return "files" }

// Key is the object key.
func (f File) Key() string { return filekey.Key(f.ClinicID, f.SHA256) }

// PartCount is the number of parts of a multipart upload (0 for single).
func (f File) PartCount() int {
	if f.Mode != filekey.ModeMultipart {
		return 0
	}
	return filekey.PartCount(f.Size, f.PartSize)
}

// View is the API form.
func (f File) View() filekey.File {
	return filekey.File{SHA256: f.SHA256, State: f.State, Size: f.Size, ContentType: f.ContentType,
		Mode: f.Mode, Reason: f.Reason, CreatedAt: f.CreatedAt, VerifiedAt: f.VerifiedAt,
		UnsyncedAt: f.UnsyncedAt, ArchivedAt: f.ArchivedAt, RemovedAt: f.RemovedAt}
}
