// Package backups keeps the list of each clinic's database snapshots (M27)
// and presigns their upload and download. The snapshot bytes go straight
// between the clinic and S3; the cloud only signs, verifies and lists.
package backups

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"gorm.io/gorm"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// MaxSize bounds one snapshot (compressed).
const MaxSize = 64 << 30

// BackupContentType is the type of a stored snapshot: the clinic encrypts
// it (age) before upload, so S3 holds opaque bytes.
const BackupContentType = "application/octet-stream"

// Row is one backup in the database.
type Row struct {
	ClinicID    ids.ID `gorm:"primaryKey;autoIncrement:false"`
	ID          ids.ID `gorm:"primaryKey;autoIncrement:false"`
	State       string `gorm:"not null;index"`
	Size        int64  `gorm:"not null"`
	SHA256      string `gorm:"column:sha256;type:char(64);not null"`
	Checkpoint  int64  `gorm:"not null;default:0"`
	Records     int64  `gorm:"not null;default:0"`
	CreatedAt   time.Time
	CompletedAt *time.Time
}

// TableName is clinic_backups.
func (Row) TableName() string { return "clinic_backups" }

func (r Row) view() filekey.Backup {
	return filekey.Backup{ID: r.ID, Clinic: r.ClinicID, State: r.State, Size: r.Size, SHA256: r.SHA256,
		Checkpoint: r.Checkpoint, Records: r.Records, CreatedAt: r.CreatedAt, CompletedAt: r.CompletedAt}
}

// IDs mints backup ids.
type IDs interface{ Next() (ids.ID, error) }

// Config of the service.
type Config struct {
	Bucket string
	// Keep is how many complete backups per clinic keep their object;
	// older ones are pruned (default 14).
	Keep int
	// URLExpiry is how long a presigned URL is valid (default 15m: a
	// snapshot of a large clinic takes a while on a small uplink).
	URLExpiry time.Duration
	// ServerSideEncryption ("AES256" or "" for none) is pinned in the
	// presigned PUT's signature, as for image files (files.server_side_encryption).
	ServerSideEncryption string
}

// Service serves the backup routes.
type Service struct {
	cfg     Config
	db      *gorm.DB
	s3      *s3.Client
	presign *s3.PresignClient
	ids     IDs
	log     *slog.Logger
}

// New returns the service over db's clinic_backups table (made by the
// database's schema owner).
func New(cfg Config, db *gorm.DB, s3c *s3.Client, gen IDs, log *slog.Logger) (*Service, error) {
	if cfg.Keep <= 0 {
		cfg.Keep = 14
	}
	if cfg.URLExpiry <= 0 {
		cfg.URLExpiry = 15 * time.Minute
	}
	return &Service{cfg: cfg, db: db, s3: s3c, presign: s3.NewPresignClient(s3c, func(o *s3.PresignOptions) {
		o.Expires = cfg.URLExpiry
	}), ids: gen, log: log}, nil
}

// Handler serves a route for the authenticated clinic.
type Handler = func(w http.ResponseWriter, r *http.Request, clinic ids.ID) error

// Route is one route of the service.
type Route struct {
	Pattern string
	Handler Handler
}

// Routes lists the backup API (filekey.PathBackup*); mount each behind the
// clinic authentication.
func (s *Service) Routes() []Route {
	return []Route{
		{"POST " + filekey.PathBackups, s.begin},
		{"GET " + filekey.PathBackups, s.list},
		{"POST " + filekey.PathBackupComplete, s.complete},
		{"GET " + filekey.PathBackupDownload, s.download},
		{"GET " + filekey.PathS3Probe, s.probe},
	}
}

// probe presigns a GET of an object that never exists under the clinic's
// prefix, for sc-local doctor.
func (s *Service) probe(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	key := filekey.ClinicPrefix(clinic) + "probe/does-not-exist"
	req, err := s.presign.PresignGetObject(r.Context(), &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &key})
	if err != nil {
		return fmt.Errorf("backups: presign probe: %w", err)
	}
	httpapi.WriteJSON(w, http.StatusOK, filekey.S3Probe{Get: s.presigned(req.Method, req.URL, req.SignedHeader)})
	return nil
}

func (s *Service) begin(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var req filekey.BackupBegin
	if err := httpapi.Decode(w, r, &req); err != nil {
		return err
	}
	sha, err := filekey.ParseSHA256(req.SHA256)
	if err != nil {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "sha256 must be 64 hex digits")
	}
	if req.Size <= 0 || req.Size > MaxSize {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "size must be 1..%d bytes", int64(MaxSize))
	}
	if req.Checkpoint < 0 || req.Records < 0 {
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "checkpoint and records must not be negative")
	}
	id, err := s.ids.Next()
	if err != nil {
		return err
	}
	row := Row{ClinicID: clinic, ID: id, State: filekey.BackupUploading, Size: req.Size, SHA256: sha,
		Checkpoint: req.Checkpoint, Records: req.Records, CreatedAt: time.Now().UTC()}
	if err := s.db.WithContext(r.Context()).Create(&row).Error; err != nil {
		return err
	}
	sum, _ := hex.DecodeString(sha)
	key := filekey.BackupKey(clinic, id)
	put := &s3.PutObjectInput{Bucket: &s.cfg.Bucket, Key: &key,
		ContentLength: aws.Int64(req.Size), ContentType: aws.String(BackupContentType),
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum))}
	if s.cfg.ServerSideEncryption != "" {
		put.ServerSideEncryption = s3types.ServerSideEncryption(s.cfg.ServerSideEncryption)
	}
	req2, err := s.presign.PresignPutObject(r.Context(), put)
	if err != nil {
		return fmt.Errorf("backups: presign put: %w", err)
	}
	httpapi.WriteJSON(w, http.StatusCreated, filekey.BackupUpload{Backup: row.view(), Put: s.presigned(req2.Method, req2.URL, req2.SignedHeader)})
	return nil
}

func (s *Service) presigned(method, url string, h http.Header) filekey.Presigned {
	p := filekey.Presigned{Method: method, URL: url, ExpiresAt: time.Now().Add(s.cfg.URLExpiry)}
	for k, v := range h {
		if http.CanonicalHeaderKey(k) == "Host" || len(v) == 0 {
			continue
		}
		if p.Header == nil {
			p.Header = map[string]string{}
		}
		p.Header[k] = v[0]
	}
	return p
}

// get loads clinic's backup named by the {id} path value ("latest": the
// newest complete one).
func (s *Service) get(ctx context.Context, clinic ids.ID, idText string) (Row, error) {
	db := s.db.WithContext(ctx).Where("clinic_id = ?", clinic)
	if idText == "latest" {
		db = db.Where("state = ?", filekey.BackupComplete).Order("id DESC")
	} else {
		id, err := ids.Parse(idText)
		if err != nil {
			return Row{}, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "id must be a backup id or latest")
		}
		db = db.Where("id = ?", id)
	}
	var row Row
	err := db.Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		if idText == "latest" {
			return Row{}, httpapi.Errorf(http.StatusNotFound, "no_backup", "the cloud has no complete backup of this clinic")
		}
		return Row{}, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such backup")
	}
	return row, err
}

// complete verifies the uploaded object (size and SHA-256, which S3
// checked against the signed header) and marks the backup complete; then
// it prunes the clinic's backups beyond Keep.
func (s *Service) complete(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	ctx := r.Context()
	row, err := s.get(ctx, clinic, r.PathValue("id"))
	if err != nil {
		return err
	}
	if row.State == filekey.BackupComplete {
		httpapi.WriteJSON(w, http.StatusOK, row.view()) // a retried complete
		return nil
	}
	if row.State != filekey.BackupUploading {
		return httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "backup %s is %s", row.ID, row.State)
	}
	key := filekey.BackupKey(clinic, row.ID)
	head, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: &key, ChecksumMode: s3types.ChecksumModeEnabled})
	if err != nil {
		var nf *s3types.NotFound
		if errors.As(err, &nf) || strings.Contains(err.Error(), "NotFound") {
			return httpapi.Errorf(http.StatusConflict, "not_uploaded", "the snapshot is not in S3 yet; send it with the presigned PUT first")
		}
		return fmt.Errorf("backups: head %s: %w", key, err)
	}
	if got := aws.ToInt64(head.ContentLength); got != row.Size {
		return httpapi.Errorf(http.StatusConflict, "verify_failed", "stored size %d, declared %d", got, row.Size)
	}
	sum, _ := hex.DecodeString(row.SHA256)
	if c := aws.ToString(head.ChecksumSHA256); c != "" && !strings.Contains(c, "-") && c != base64.StdEncoding.EncodeToString(sum) {
		return httpapi.Errorf(http.StatusConflict, "verify_failed", "stored SHA-256 differs from the declared one")
	}
	now := time.Now().UTC()
	res := s.db.WithContext(ctx).Model(&Row{}).Where("clinic_id = ? AND id = ? AND state = ?", clinic, row.ID, filekey.BackupUploading).
		Updates(map[string]any{"state": filekey.BackupComplete, "completed_at": now})
	if res.Error != nil {
		return res.Error
	}
	row.State, row.CompletedAt = filekey.BackupComplete, &now
	if err := s.prune(ctx, clinic); err != nil {
		s.log.Warn("pruning old backups failed; will retry at the next backup", "clinic", clinic, "err", err)
	}
	s.log.Info("clinic backup stored", "clinic", clinic, "backup", row.ID, "bytes", row.Size, "checkpoint", row.Checkpoint)
	httpapi.WriteJSON(w, http.StatusOK, row.view())
	return nil
}

// prune deletes the objects of clinic's complete backups beyond Keep,
// newest kept, and marks them pruned.
func (s *Service) prune(ctx context.Context, clinic ids.ID) error {
	var old []Row
	err := s.db.WithContext(ctx).Where("clinic_id = ? AND state = ?", clinic, filekey.BackupComplete).
		Order("id DESC").Offset(s.cfg.Keep).Find(&old).Error
	if err != nil {
		return err
	}
	for _, b := range old {
		key := filekey.BackupKey(clinic, b.ID)
		if _, err := s.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: &key}); err != nil {
			return fmt.Errorf("backups: delete %s: %w", key, err)
		}
		if err := s.db.WithContext(ctx).Model(&Row{}).Where("clinic_id = ? AND id = ?", clinic, b.ID).
			Update("state", filekey.BackupPruned).Error; err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) list(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	var rows []Row
	err := s.db.WithContext(r.Context()).Where("clinic_id = ? AND state = ?", clinic, filekey.BackupComplete).
		Order("id DESC").Limit(100).Find(&rows).Error
	if err != nil {
		return err
	}
	out := filekey.BackupList{Items: make([]filekey.Backup, 0, len(rows))}
	for _, b := range rows {
		out.Items = append(out.Items, b.view())
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Service) download(w http.ResponseWriter, r *http.Request, clinic ids.ID) error {
	row, err := s.get(r.Context(), clinic, r.PathValue("id"))
	if err != nil {
		return err
	}
	if row.State != filekey.BackupComplete {
		return httpapi.Errorf(http.StatusConflict, httpapi.CodeConflict, "backup %s is %s, not complete", row.ID, row.State)
	}
	key := filekey.BackupKey(clinic, row.ID)
	req, err := s.presign.PresignGetObject(r.Context(), &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: &key})
	if err != nil {
		return fmt.Errorf("backups: presign get: %w", err)
	}
	httpapi.WriteJSON(w, http.StatusOK, filekey.BackupDownload{Backup: row.view(), Get: s.presigned(req.Method, req.URL, req.SignedHeader)})
	return nil
}
