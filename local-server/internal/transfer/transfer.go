// Package transfer moves the clinic's image files between its disk and the
// cloud's object store, straight to and from S3 with presigned URLs the
// cloud hands out (the clinic holds no S3 credentials and no AWS SDK: plain
// net/http).
//
// Transfers are queued in SQLite (file_transfers) and run by a Worker with
// bounded concurrency; they survive restarts. Uploads stream the file from
// disk (io.SectionReader, no file or part buffers: memory stays flat in the
// file size); large files go in parts whose progress is kept in
// file_transfer_parts and confirmed with the cloud's list of stored parts,
// so a crash costs at most the parts in flight. Downloads resume with Range
// into a ".part" file and become visible under their name only once their
// SHA-256 is verified. See docs/files.md.
package transfer

import "time"

// Directions.
const (
	Up   = "up"   // clinic → cloud
	Down = "down" // cloud → clinic
)

// States of a transfer.
const (
	// StateQueued: waiting for its turn (NextAttemptAt) — new, or retrying
	// after a transient error (Reason holds the last one).
	StateQueued = "queued"
	// StateUploading: bytes are going up (BytesDone of Size).
	StateUploading = "uploading"
	// StateDownloading: bytes are coming down (BytesDone of Size).
	StateDownloading = "downloading"
	// StatePresent: done; up: the cloud holds the verified file; down: the
	// verified file is at Path.
	StatePresent = "present"
	// StateFailed: given up (Reason); Retry queues it again.
	StateFailed = "failed"
)

// Transfer is one queued file transfer.
type Transfer struct {
	ID        int64  `gorm:"primaryKey" json:"id"`
	Direction string `gorm:"not null;uniqueIndex:ux_file_transfers_key,priority:1" json:"direction"`
	SHA256    string `gorm:"column:sha256;not null;uniqueIndex:ux_file_transfers_key,priority:2" json:"sha256"`
	// Path is the source (up) or the destination (down) on local disk.
	Path          string     `gorm:"not null;uniqueIndex:ux_file_transfers_key,priority:3" json:"path"`
	Size          int64      `gorm:"not null;default:0" json:"size"`
	ContentType   string     `gorm:"not null;default:''" json:"content_type,omitempty"`
	State         string     `gorm:"not null;index" json:"state"`
	BytesDone     int64      `gorm:"not null;default:0" json:"bytes_done"`
	Attempts      int        `gorm:"not null;default:0" json:"attempts"`
	NextAttemptAt time.Time  `gorm:"not null;index" json:"next_attempt_at"`
	Reason        string     `gorm:"not null;default:''" json:"reason,omitempty"`
	UploadID      string     `gorm:"not null;default:''" json:"-"` // the cloud's multipart upload the parts belong to
	PartSize      int64      `gorm:"not null;default:0" json:"part_size,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	DoneAt        *time.Time `json:"done_at,omitempty"`
}

// TableName is file_transfers.
func (Transfer) TableName() string { return "file_transfers" }

// Part is one part of a multipart upload that S3 has acknowledged.
type Part struct {
	TransferID int64     `gorm:"primaryKey;autoIncrement:false"`
	Number     int       `gorm:"primaryKey;autoIncrement:false"`
	UploadID   string    `gorm:"not null"`
	Size       int64     `gorm:"not null"`
	ETag       string    `gorm:"not null;default:''"`
	SentAt     time.Time `gorm:"not null"`
}

// TableName is file_transfer_parts.
func (Part) TableName() string { return "file_transfer_parts" }
