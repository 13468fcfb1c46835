package filekey

import (
	"time"

	"github.com/scsync/scsync/shared/ids"
)

// Backups of a clinic server's database (M27): sc-local uploads a snapshot
// straight to S3 through a presigned PUT (SHA-256 and length signed), the
// cloud keeps the list; a replaced machine downloads the newest one.
//
//	POST /v1/clinics/{clinic}/backups                  BackupBegin → BackupUpload (201)
//	POST /v1/clinics/{clinic}/backups/{id}/complete    → Backup (complete, verified)
//	GET  /v1/clinics/{clinic}/backups                  → BackupList (complete ones, newest first)
//	GET  /v1/clinics/{clinic}/backups/latest/download  → BackupDownload
//	GET  /v1/clinics/{clinic}/backups/{id}/download    → BackupDownload
const (
	PathBackups        = "/v1/clinics/{clinic}/backups"
	PathBackupComplete = PathBackups + "/{id}/complete"
	PathBackupDownload = PathBackups + "/{id}/download"
)

// Backup states.
const (
	BackupUploading = "uploading"
	BackupComplete  = "complete"
	// BackupPruned: an older backup whose object was deleted to keep only
	// the newest ones; the row stays as a record of it.
	BackupPruned = "pruned"
)

// BackupBegin announces a snapshot to upload.
type BackupBegin struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Checkpoint is the cloud_seq the snapshot had applied: a machine
	// restored from it catches up from there.
	Checkpoint int64 `json:"checkpoint"`
	// Records is how many records the snapshot holds (for people).
	Records int64 `json:"records"`
}

// Backup is one snapshot of a clinic's database.
type Backup struct {
	ID          ids.ID     `json:"id"`
	Clinic      ids.ID     `json:"clinic"`
	State       string     `json:"state"`
	Size        int64      `json:"size"`
	SHA256      string     `json:"sha256"`
	Checkpoint  int64      `json:"checkpoint"`
	Records     int64      `json:"records"`
	CreatedAt   time.Time  `json:"created_at"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}

// BackupUpload is the answer to BackupBegin: the PUT to send the snapshot.
type BackupUpload struct {
	Backup Backup    `json:"backup"`
	Put    Presigned `json:"put"`
}

// BackupList lists backups.
type BackupList struct {
	Items []Backup `json:"items"`
}

// BackupDownload is a presigned GET of a backup.
type BackupDownload struct {
	Backup Backup    `json:"backup"`
	Get    Presigned `json:"get"`
}

// BackupKey is the object key of a clinic's backup.
func BackupKey(clinic, id ids.ID) string {
	return ClinicPrefix(clinic) + "backups/" + id.String() + ".db.gz"
}
