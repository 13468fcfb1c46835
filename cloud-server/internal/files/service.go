// Package files is sc-cloud's file service: it hands clinics presigned S3
// requests for their image files and verifies what they stored.
//
// Files are content-addressed (shared/filekey): the object key is derived
// here from the authenticated clinic and the file's SHA-256, so a clinic can
// only ever get URLs for its own keys and an original, once present, is
// immutable. Bytes never pass through sc-cloud: clinics PUT and GET them
// straight to and from S3 with URLs that are scoped to one object and expire
// in minutes. Small files go up in one PUT whose signature pins the length and
// the SHA-256 (S3 refuses any other body); large files go up in parts of at
// least 8 MiB that can be resumed after a crash. Complete verifies size and
// SHA-256 with S3 before a file becomes present; a mismatch deletes the
// object. Sweep aborts abandoned multipart uploads. See docs/files.md.
package files

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/prometheus/client_golang/prometheus"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
)

// Service is the file service of one sc-cloud node. It keeps no state of its
// own: rows in PostgreSQL and objects in S3 are the truth, so any node can
// serve any step of an upload.
type Service struct {
	cfg     Config
	db      *gorm.DB
	s3      *s3.Client
	presign *s3.PresignClient
	log     *slog.Logger
	m       *metrics
	now     func() time.Time

	reqBytes, respBytes, verifyBytes atomic.Int64
	thumbs                           thumbCache
}

// New returns the service. s3c is the S3 client of the cloud (see
// NewS3Client); db must have the files table (Migrate). reg, when not nil,
// receives the service's metrics.
func New(cfg Config, db *gorm.DB, s3c *s3.Client, reg prometheus.Registerer, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	opts := []func(*s3.PresignOptions){s3.WithPresignExpires(cfg.URLExpiry)}
	if cfg.PublicEndpoint != "" {
		opts = append(opts, func(o *s3.PresignOptions) {
			o.ClientOptions = append(o.ClientOptions, func(so *s3.Options) { so.BaseEndpoint = aws.String(cfg.PublicEndpoint) })
		})
	}
	return &Service{cfg: cfg, db: db, s3: s3c, presign: s3.NewPresignClient(s3c, opts...), log: log, m: m,
		now: func() time.Time { return time.Now().UTC() }}, nil
}

// Relayed counts the HTTP body bytes the file API handlers read and wrote.
// Files never pass through the cloud, so these stay at the size of the JSON
// (a test asserts it); VerifyRead is what the cloud itself read from S3 to
// verify multipart uploads (S3 to cloud only, never sent to a clinic).
type Relayed struct {
	RequestBytes, ResponseBytes, VerifyRead int64
}

// Relayed returns the counters since start.
func (s *Service) Relayed() Relayed {
	return Relayed{RequestBytes: s.reqBytes.Load(), ResponseBytes: s.respBytes.Load(), VerifyRead: s.verifyBytes.Load()}
}

// maxContentType bounds a declared content type.
const maxContentType = 127

func checkContentType(ct string) (string, error) {
	ct = strings.TrimSpace(ct)
	if ct == "" {
		return "application/octet-stream", nil
	}
	if len(ct) > maxContentType || strings.ContainsFunc(ct, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return "", fmt.Errorf("%w: must be printable ASCII of at most %d characters", ErrInvalidContentType, maxContentType)
	}
	return ct, nil
}

func (s *Service) get(ctx context.Context, clinic ids.ID, sha string) (File, error) {
	var f File
	err := s.db.WithContext(ctx).Where("clinic_id = ? AND sha256 = ?", clinic, sha).Take(&f).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return f, ErrNotFound
	}
	if err != nil {
		return f, fmt.Errorf("files: load %s: %w", sha, err)
	}
	return f, nil
}

// update changes f's row when it is still in state from (and, for
// multipart, still has uploadID), and reports whether it did.
func (s *Service) update(ctx context.Context, f File, from, uploadID string, set map[string]any) (bool, error) {
	set["updated_at"] = s.now()
	q := s.db.WithContext(ctx).Model(&File{}).Where("clinic_id = ? AND sha256 = ? AND state = ?", f.ClinicID, f.SHA256, from)
	if uploadID != "*" {
		q = q.Where("upload_id = ?", uploadID)
	}
	res := q.Updates(set)
	if res.Error != nil {
		return false, fmt.Errorf("files: update %s: %w", f.SHA256, res.Error)
	}
	return res.RowsAffected == 1, nil
}

// anyUpload matches every upload id in update.
const anyUpload = "*"

// BeginUpload opens or resumes the upload of clinic's file sha of size
// bytes. A file already present is not uploaded again (Present is true).
func (s *Service) BeginUpload(ctx context.Context, clinic ids.ID, sha string, size int64, contentType string) (filekey.BeginResponse, error) {
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return filekey.BeginResponse{}, err
	}
	if size < 0 || size > s.cfg.MaxSize {
		return filekey.BeginResponse{}, fmt.Errorf("%w: size must be 0..%d bytes", ErrInvalidSize, s.cfg.MaxSize)
	}
	if contentType, err = checkContentType(contentType); err != nil {
		return filekey.BeginResponse{}, err
	}
	mode, partSize := filekey.ModeSingle, int64(0)
	if size >= s.cfg.MultipartThreshold {
		mode, partSize = filekey.ModeMultipart, filekey.PartSizeFor(size, s.cfg.PartSize)
	}
	now := s.now()
	row := File{ClinicID: clinic, SHA256: sha, State: filekey.StateUploading, Size: size, ContentType: contentType,
		Mode: mode, PartSize: partSize, CreatedAt: now, UpdatedAt: now}
	if err := s.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
		return filekey.BeginResponse{}, fmt.Errorf("files: insert %s: %w", sha, err)
	}
	// A few rounds at most: a failed file is reset to uploading; a stored
	// object that fails verification is deleted and the file failed, and
	// the next round resets it.
	for range 4 {
		f, err := s.get(ctx, clinic, sha)
		if err != nil {
			return filekey.BeginResponse{}, err
		}
		if f.State == filekey.StateFailed || f.State == filekey.StateDeleted {
			set := map[string]any{"state": filekey.StateUploading,
				"size": size, "content_type": contentType, "mode": mode, "part_size": partSize, "upload_id": "",
				"upload_started_at": nil, "reason": ""}
			if f.State == filekey.StateDeleted && f.UnsyncedAt != nil {
				// Uploaded again while still no live record names it: a
				// fresh grace period, not the one already spent. "Still"
				// as the row is when updated, not as read above: a record
				// synced again may have cleared the mark since (MarkSynced,
				// in the clinic's change transaction), and the upload must
				// not put it back.
				set["unsynced_at"] = gorm.Expr("CASE WHEN unsynced_at IS NULL THEN NULL ELSE ?::timestamptz END", now)
			}
			if _, err := s.update(ctx, f, f.State, anyUpload, set); err != nil {
				return filekey.BeginResponse{}, err
			}
			continue
		}
		if f.State != filekey.StateUploading {
			// Present, or in (or on its way to or from) cold storage: the
			// cloud holds the bytes, the clinic sends nothing.
			return filekey.BeginResponse{SHA256: sha, State: f.State, Present: true, Size: f.Size}, nil
		}
		if f.Size != size {
			return filekey.BeginResponse{}, fmt.Errorf("%w: an upload of this file with size %d is open; abort it to start over", ErrSizeConflict, f.Size)
		}
		// A client that crashed after its bytes reached S3 but before it
		// called complete must not send them again.
		exists, err := s.objectExists(ctx, f.Key())
		if err != nil {
			return filekey.BeginResponse{}, err
		}
		if exists {
			f, err = s.verifyAndMark(ctx, f)
			var ve *VerifyError
			if errors.As(err, &ve) {
				continue
			}
			if err != nil {
				return filekey.BeginResponse{}, err
			}
			return filekey.BeginResponse{SHA256: sha, State: f.State, Present: true, Size: f.Size}, nil
		}
		resp := filekey.BeginResponse{SHA256: sha, State: f.State, Size: f.Size, Mode: f.Mode}
		if f.Mode == filekey.ModeSingle {
			put, err := s.presignPut(ctx, f)
			if err != nil {
				return resp, err
			}
			resp.Put = &put
			return resp, nil
		}
		if f, err = s.ensureUpload(ctx, f); err != nil {
			return resp, err
		}
		resp.UploadID, resp.PartSize, resp.PartCount = f.UploadID, f.PartSize, f.PartCount()
		return resp, nil
	}
	return filekey.BeginResponse{}, fmt.Errorf("files: begin %s: state kept changing", sha)
}

// ensureUpload makes sure f has an open multipart upload in S3: the one it
// recorded if S3 still has it (so a restarted client resumes it), else a
// new one. Nodes racing here agree on one through the conditional update.
func (s *Service) ensureUpload(ctx context.Context, f File) (File, error) {
	if f.UploadID != "" {
		_, err := s.s3.ListParts(ctx, &s3.ListPartsInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key()),
			UploadId: aws.String(f.UploadID), MaxParts: aws.Int32(1)})
		if err == nil {
			return f, nil
		}
		if !isCode(err, "NoSuchUpload") {
			return f, fmt.Errorf("files: list parts of %s: %w", f.SHA256, err)
		}
	}
	in := &s3.CreateMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key()), ContentType: aws.String(f.ContentType)}
	if s.cfg.ServerSideEncryption != "" {
		in.ServerSideEncryption = s3types.ServerSideEncryption(s.cfg.ServerSideEncryption)
	}
	out, err := s.s3.CreateMultipartUpload(ctx, in)
	if err != nil {
		return f, fmt.Errorf("files: create multipart upload of %s: %w", f.SHA256, err)
	}
	now := s.now()
	ok, err := s.update(ctx, f, filekey.StateUploading, f.UploadID, map[string]any{"upload_id": *out.UploadId, "upload_started_at": now})
	if err == nil && ok {
		f.UploadID, f.UploadStartedAt = *out.UploadId, &now
		s.log.Info("multipart upload created", "clinic", f.ClinicID, "sha256", f.SHA256, "parts", f.PartCount())
		return f, nil
	}
	// Another node won (or the row changed under us): drop ours, use theirs.
	s.abortUpload(ctx, f.Key(), *out.UploadId)
	if err != nil {
		return f, err
	}
	g, err := s.get(ctx, f.ClinicID, f.SHA256)
	if err != nil {
		return f, err
	}
	if g.State != filekey.StateUploading || g.UploadID == "" {
		return g, fmt.Errorf("files: begin %s: concurrent change, retry", f.SHA256)
	}
	return g, nil
}

func (s *Service) abortUpload(ctx context.Context, key, uploadID string) {
	_, err := s.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: aws.String(key), UploadId: aws.String(uploadID)})
	if err != nil && !isCode(err, "NoSuchUpload") {
		s.log.Warn("abort multipart upload failed", "key", key, "err", err)
	}
}

// presignPut signs the single PUT of f. Content-Length and
// x-amz-checksum-sha256 are signed headers: S3 refuses a body of another
// length (403) or another SHA-256 (400), so nothing but the declared file
// can ever be stored under its key this way.
func (s *Service) presignPut(ctx context.Context, f File) (filekey.Presigned, error) {
	sum, err := hex.DecodeString(f.SHA256)
	if err != nil {
		return filekey.Presigned{}, fmt.Errorf("files: %w", filekey.ErrInvalidSHA256)
	}
	in := &s3.PutObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key()), ContentLength: aws.Int64(f.Size),
		ContentType: aws.String(f.ContentType), ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum))}
	if s.cfg.ServerSideEncryption != "" {
		in.ServerSideEncryption = s3types.ServerSideEncryption(s.cfg.ServerSideEncryption)
	}
	req, err := s.presign.PresignPutObject(ctx, in)
	if err != nil {
		return filekey.Presigned{}, fmt.Errorf("files: presign put of %s: %w", f.SHA256, err)
	}
	return s.presigned(req.Method, req.URL, req.SignedHeader), nil
}

func (s *Service) presigned(method, url string, h http.Header) filekey.Presigned {
	p := filekey.Presigned{Method: method, URL: url, ExpiresAt: s.now().Add(s.cfg.URLExpiry)}
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

func (s *Service) openMultipart(ctx context.Context, clinic ids.ID, sha string) (File, error) {
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return File{}, err
	}
	f, err := s.get(ctx, clinic, sha)
	if err != nil {
		return f, err
	}
	switch {
	case f.State != filekey.StateUploading:
		return f, ErrNotUploading
	case f.Mode != filekey.ModeMultipart:
		return f, ErrNotMultipart
	case f.UploadID == "":
		return f, ErrUploadGone
	}
	return f, nil
}

// PartURLs presigns the UploadPart requests of parts (1-based numbers) of
// clinic's open multipart upload of sha. Each URL pins its part's length.
func (s *Service) PartURLs(ctx context.Context, clinic ids.ID, sha string, parts []int) (filekey.PartURLsResponse, error) {
	f, err := s.openMultipart(ctx, clinic, sha)
	if err != nil {
		return filekey.PartURLsResponse{}, err
	}
	if len(parts) == 0 || len(parts) > s.cfg.MaxPartURLs {
		return filekey.PartURLsResponse{}, fmt.Errorf("%w: ask for 1..%d parts at a time", ErrInvalidPart, s.cfg.MaxPartURLs)
	}
	resp := filekey.PartURLsResponse{UploadID: f.UploadID, Parts: make([]filekey.PartURL, 0, len(parts))}
	seen := map[int]bool{}
	for _, n := range parts {
		_, size, ok := filekey.PartRange(f.Size, f.PartSize, n)
		if !ok {
			return filekey.PartURLsResponse{}, fmt.Errorf("%w: %d is not in 1..%d", ErrInvalidPart, n, f.PartCount())
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		req, err := s.presign.PresignUploadPart(ctx, &s3.UploadPartInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key()),
			UploadId: aws.String(f.UploadID), PartNumber: aws.Int32(int32(n)), ContentLength: aws.Int64(size)})
		if err != nil {
			return filekey.PartURLsResponse{}, fmt.Errorf("files: presign part %d of %s: %w", n, f.SHA256, err)
		}
		resp.Parts = append(resp.Parts, filekey.PartURL{Number: n, Size: size, Put: s.presigned(req.Method, req.URL, req.SignedHeader)})
	}
	return resp, nil
}

// ListParts returns the parts S3 holds for clinic's open multipart upload of
// sha, so a restarted client sends only the others.
func (s *Service) ListParts(ctx context.Context, clinic ids.ID, sha string) (filekey.PartsResponse, error) {
	f, err := s.openMultipart(ctx, clinic, sha)
	if err != nil {
		return filekey.PartsResponse{}, err
	}
	parts, err := s.listParts(ctx, f)
	if err != nil {
		return filekey.PartsResponse{}, err
	}
	return filekey.PartsResponse{UploadID: f.UploadID, PartSize: f.PartSize, PartCount: f.PartCount(), Parts: parts}, nil
}

func (s *Service) listParts(ctx context.Context, f File) ([]filekey.Part, error) {
	var parts []filekey.Part
	p := s3.NewListPartsPaginator(s.s3, &s3.ListPartsInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key()), UploadId: aws.String(f.UploadID)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if isCode(err, "NoSuchUpload") {
			return nil, ErrUploadGone
		}
		if err != nil {
			return nil, fmt.Errorf("files: list parts of %s: %w", f.SHA256, err)
		}
		for _, pt := range page.Parts {
			parts = append(parts, filekey.Part{Number: int(aws.ToInt32(pt.PartNumber)), Size: aws.ToInt64(pt.Size), ETag: aws.ToString(pt.ETag)})
		}
	}
	slices.SortFunc(parts, func(a, b filekey.Part) int { return a.Number - b.Number })
	return parts, nil
}

// Complete finishes clinic's upload of sha and verifies the object: size
// and SHA-256 must be the declared ones, else the object is deleted and the
// file marked failed (a *VerifyError). Completing a present file is a no-op.
func (s *Service) Complete(ctx context.Context, clinic ids.ID, sha string) (filekey.File, error) {
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return filekey.File{}, err
	}
	f, err := s.get(ctx, clinic, sha)
	if err != nil {
		return filekey.File{}, err
	}
	switch f.State {
	case filekey.StateUploading:
	case filekey.StateFailed, filekey.StateDeleted:
		return f.View(), ErrNotUploading
	default: // present, archived, or moving between storages
		return f.View(), nil
	}
	if f.Mode == filekey.ModeMultipart {
		if err := s.completeMultipart(ctx, f); err != nil {
			return f.View(), err
		}
	}
	f, err = s.verifyAndMark(ctx, f)
	return f.View(), err
}

// completeMultipart asks S3 to assemble the parts. An upload that is gone
// may have been completed by a concurrent call: then the object exists and
// is verified like any other.
func (s *Service) completeMultipart(ctx context.Context, f File) error {
	if f.UploadID == "" {
		if ok, err := s.objectExists(ctx, f.Key()); err != nil || ok {
			return err
		}
		return ErrUploadGone
	}
	parts, err := s.listParts(ctx, f)
	if errors.Is(err, ErrUploadGone) {
		return s.uploadGone(ctx, f)
	}
	if err != nil {
		return err
	}
	n := f.PartCount()
	have := make(map[int]filekey.Part, len(parts))
	for _, p := range parts {
		have[p.Number] = p
	}
	var missing PartsMissingError
	done := make([]s3types.CompletedPart, 0, n)
	for i := 1; i <= n; i++ {
		_, size, _ := filekey.PartRange(f.Size, f.PartSize, i)
		p, ok := have[i]
		if !ok || p.Size != size {
			missing.Count++
			if len(missing.Missing) < 20 {
				missing.Missing = append(missing.Missing, i)
			}
			continue
		}
		done = append(done, s3types.CompletedPart{PartNumber: aws.Int32(int32(i)), ETag: aws.String(p.ETag)})
	}
	if missing.Count > 0 {
		return &missing
	}
	_, err = s.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key()),
		UploadId: aws.String(f.UploadID), MultipartUpload: &s3types.CompletedMultipartUpload{Parts: done}})
	if isCode(err, "NoSuchUpload") {
		return s.uploadGone(ctx, f)
	}
	if err != nil {
		return fmt.Errorf("files: complete multipart upload of %s: %w", f.SHA256, err)
	}
	if _, err := s.update(ctx, f, filekey.StateUploading, f.UploadID, map[string]any{"upload_id": "", "upload_started_at": nil}); err != nil {
		return err
	}
	return nil
}

// uploadGone handles an upload S3 no longer has: completed by another call
// (the object exists) or aborted (forget it; the client begins again).
func (s *Service) uploadGone(ctx context.Context, f File) error {
	ok, err := s.objectExists(ctx, f.Key())
	if err != nil || ok {
		return err
	}
	if _, err := s.update(ctx, f, filekey.StateUploading, f.UploadID, map[string]any{"upload_id": "", "upload_started_at": nil}); err != nil {
		return err
	}
	return ErrUploadGone
}

func (s *Service) objectExists(ctx context.Context, key string) (bool, error) {
	_, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(key)})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("files: head %s: %w", key, err)
	}
	return true, nil
}

// verifyAndMark checks the object of f against its declared size and
// SHA-256 and marks the file present, or deletes the object and marks the
// file failed (returning a *VerifyError).
func (s *Service) verifyAndMark(ctx context.Context, f File) (File, error) {
	reason, err := s.verify(ctx, f)
	if err != nil {
		return f, err
	}
	now := s.now()
	if reason != "" {
		s.m.verified.WithLabelValues("mismatch").Inc()
		s.log.Warn("file rejected", "clinic", f.ClinicID, "sha256", f.SHA256, "reason", reason)
		if _, err := s.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key())}); err != nil {
			return f, fmt.Errorf("files: delete rejected %s: %w", f.SHA256, err)
		}
		if _, err := s.update(ctx, f, filekey.StateUploading, anyUpload, map[string]any{"state": filekey.StateFailed,
			"reason": reason, "upload_id": "", "upload_started_at": nil}); err != nil {
			return f, err
		}
		f.State, f.Reason = filekey.StateFailed, reason
		return f, &VerifyError{Reason: reason}
	}
	ok, err := s.update(ctx, f, filekey.StateUploading, anyUpload, map[string]any{"state": filekey.StatePresent,
		"reason": "", "upload_id": "", "upload_started_at": nil, "verified_at": now})
	if err != nil {
		return f, err
	}
	if !ok { // a concurrent call got there first
		return s.get(ctx, f.ClinicID, f.SHA256)
	}
	s.m.verified.WithLabelValues("ok").Inc()
	s.log.Info("file present", "clinic", f.ClinicID, "sha256", f.SHA256, "size", f.Size, "mode", f.Mode)
	f.State, f.Reason, f.UploadID, f.VerifiedAt = filekey.StatePresent, "", "", &now
	return f, nil
}

// verify returns "" when the object of f has f's size and SHA-256, else the
// reason it does not. S3's own full-object SHA-256 (which S3 checked
// against the body when the single PUT arrived) is used when it has one, so
// nothing is read; otherwise (multipart: S3 only keeps a checksum of the
// part checksums) the object is streamed once through SHA-256 here, S3 to
// cloud, never to a clinic.
func (s *Service) verify(ctx context.Context, f File) (string, error) {
	head, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key()), ChecksumMode: s3types.ChecksumModeEnabled})
	if isNotFound(err) {
		return "", ErrNotUploaded
	}
	if err != nil {
		return "", fmt.Errorf("files: head %s: %w", f.SHA256, err)
	}
	if got := aws.ToInt64(head.ContentLength); got != f.Size {
		return fmt.Sprintf("stored size %d, declared %d", got, f.Size), nil
	}
	want, _ := hex.DecodeString(f.SHA256)
	if c := aws.ToString(head.ChecksumSHA256); c != "" && !strings.Contains(c, "-") &&
		(head.ChecksumType == s3types.ChecksumTypeFullObject || head.ChecksumType == "") {
		if c != base64.StdEncoding.EncodeToString(want) {
			return "stored SHA-256 differs from the declared one", nil
		}
		return "", nil
	}
	h := sha256.New()
	start := time.Now()
	n, err := s.readObject(ctx, f.Key(), aws.ToString(head.ETag), f.Size, h)
	s.verifyBytes.Add(n)
	s.m.verifyRead.Add(float64(n))
	if err != nil {
		return "", fmt.Errorf("files: read %s to verify: %w", f.SHA256, err)
	}
	s.log.Debug("object hashed", "sha256", f.SHA256, "bytes", n, "took", time.Since(start))
	if n != f.Size {
		return fmt.Sprintf("read %d bytes, declared %d", n, f.Size), nil
	}
	if string(h.Sum(nil)) != string(want) {
		return "stored SHA-256 differs from the declared one", nil
	}
	return "", nil
}

// Verification reads ahead: verifyChunk-sized ranges of the object are
// fetched by up to verifyReaders concurrent ranged GETs while the SHA-256
// (which must see the bytes in order, on one core) hashes the ones before,
// so a verify takes about as long as the longer of reading and hashing
// instead of both one after the other. Memory: verifyReaders+1 chunks per
// verify in progress (40 MiB), allocated once per verify and reused for
// every range (a fresh 8 MiB buffer per range was 1 GiB of allocation,
// page faults and GC work per GiB verified).
const (
	verifyChunk   = 8 << 20
	verifyReaders = 4
)

// readObject writes the object at key, whose HeadObject answered size and
// etag, to w in order, and returns how many bytes it wrote. Every ranged
// GET is conditional on etag (If-Match), so all the ranges come from the
// object HeadObject measured. A small object is read with one plain GET.
func (s *Service) readObject(ctx context.Context, key, etag string, size int64, w io.Writer) (int64, error) {
	if size <= verifyChunk {
		obj, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(key)})
		if err != nil {
			return 0, err
		}
		defer obj.Body.Close()
		return io.Copy(w, obj.Body)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type chunk struct {
		b   []byte
		err error
	}
	var ifMatch *string
	if etag != "" {
		ifMatch = aws.String(etag)
	}
	count := int((size + verifyChunk - 1) / verifyChunk)
	results := make([]chan chunk, count)
	for i := range results {
		results[i] = make(chan chunk, 1)
	}
	sem := make(chan struct{}, verifyReaders)
	// free holds the chunk buffers not in use: a range takes one before its
	// GET, the hasher gives it back once hashed. A reader holds a buffer
	// only while it holds a place in sem, and the hasher one more.
	free := make(chan []byte, verifyReaders+1)
	for range min(verifyReaders+1, count) {
		free <- make([]byte, verifyChunk)
	}
	go func() {
		for i := range count {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func() {
				off := int64(i) * verifyChunk
				end := min(off+verifyChunk, size) - 1
				obj, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(key),
					Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, end)), IfMatch: ifMatch})
				if err != nil {
					results[i] <- chunk{err: err}
					return
				}
				defer obj.Body.Close()
				var b []byte
				select {
				case b = <-free:
				case <-ctx.Done():
					results[i] <- chunk{err: ctx.Err()}
					return
				}
				b = b[:end-off+1]
				m, err := io.ReadFull(obj.Body, b)
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					err = nil // shorter than declared: the caller sees the count
				}
				results[i] <- chunk{b: b[:m], err: err}
			}()
		}
	}()
	var n int64
	for i := range count {
		var c chunk
		select {
		case c = <-results[i]:
		case <-ctx.Done():
			return n, ctx.Err()
		}
		<-sem // the next range may start while this one is hashed
		if c.err != nil {
			return n, c.err
		}
		m, err := w.Write(c.b)
		n += int64(m)
		if err != nil {
			return n, err
		}
		if int64(len(c.b)) < min(verifyChunk, size-int64(i)*verifyChunk) {
			return n, nil // the object is shorter than declared
		}
		free <- c.b[:cap(c.b)]
	}
	return n, nil
}

// Abort gives up clinic's open upload of sha: the multipart upload is
// aborted and the file marked failed, so the next begin starts afresh. A
// present file is left alone.
func (s *Service) Abort(ctx context.Context, clinic ids.ID, sha string) (filekey.File, error) {
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return filekey.File{}, err
	}
	f, err := s.get(ctx, clinic, sha)
	if err != nil || f.State != filekey.StateUploading {
		return f.View(), err
	}
	if f.UploadID != "" {
		s.abortUpload(ctx, f.Key(), f.UploadID)
	}
	if _, err := s.update(ctx, f, filekey.StateUploading, f.UploadID, map[string]any{"state": filekey.StateFailed,
		"reason": "aborted by the clinic", "upload_id": "", "upload_started_at": nil}); err != nil {
		return f.View(), err
	}
	g, err := s.get(ctx, clinic, sha)
	return g.View(), err
}

// Stat returns clinic's file sha.
func (s *Service) Stat(ctx context.Context, clinic ids.ID, sha string) (filekey.File, error) {
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return filekey.File{}, err
	}
	f, err := s.get(ctx, clinic, sha)
	return f.View(), err
}

// Check is Stat after asking S3 whether a present file's object is still
// there with its size and (when S3 keeps a full-object one) its SHA-256
// (sc-local's verify, docs/verify.md). An object that is gone or differs
// turns the file failed with the reason, so the clinic's next begin uploads
// it again. A multipart object's hash was checked when it was completed
// and its key is immutable, so only its size is checked here (no read).
func (s *Service) Check(ctx context.Context, clinic ids.ID, sha string) (filekey.File, error) {
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return filekey.File{}, err
	}
	f, err := s.get(ctx, clinic, sha)
	if err != nil {
		return f.View(), err
	}
	return s.check(ctx, f)
}

// check is Check of a loaded row: a present file's object is asked for
// (HeadObject) and the row turned failed when it is gone or differs.
func (s *Service) check(ctx context.Context, f File) (filekey.File, error) {
	if f.State != filekey.StatePresent {
		return f.View(), nil
	}
	reason := ""
	head, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key()), ChecksumMode: s3types.ChecksumModeEnabled})
	switch {
	case isNotFound(err):
		reason = "object missing from S3"
	case err != nil:
		return f.View(), fmt.Errorf("files: head %s: %w", f.SHA256, err)
	case aws.ToInt64(head.ContentLength) != f.Size:
		reason = fmt.Sprintf("stored size %d, declared %d", aws.ToInt64(head.ContentLength), f.Size)
	default:
		want, _ := hex.DecodeString(f.SHA256)
		if c := aws.ToString(head.ChecksumSHA256); c != "" && !strings.Contains(c, "-") &&
			(head.ChecksumType == s3types.ChecksumTypeFullObject || head.ChecksumType == "") &&
			c != base64.StdEncoding.EncodeToString(want) {
			reason = "stored SHA-256 differs from the declared one"
		}
	}
	if reason == "" {
		return f.View(), nil
	}
	s.log.Warn("present file failed its check", "clinic", f.ClinicID, "sha256", f.SHA256, "reason", reason)
	if _, err := s.update(ctx, f, filekey.StatePresent, anyUpload, map[string]any{"state": filekey.StateFailed, "reason": reason}); err != nil {
		return f.View(), err
	}
	g, err := s.get(ctx, f.ClinicID, f.SHA256)
	return g.View(), err
}

// DownloadURL presigns a GET of clinic's file sha; only a present
// (verified) file that a live record names (or that no record named yet)
// can be downloaded.
func (s *Service) DownloadURL(ctx context.Context, clinic ids.ID, sha string) (filekey.DownloadResponse, error) {
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return filekey.DownloadResponse{}, err
	}
	f, err := s.get(ctx, clinic, sha)
	if err != nil {
		return filekey.DownloadResponse{}, err
	}
	if err := downloadable(f); err != nil {
		return filekey.DownloadResponse{}, err
	}
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(f.Key())})
	if err != nil {
		return filekey.DownloadResponse{}, fmt.Errorf("files: presign get of %s: %w", sha, err)
	}
	return filekey.DownloadResponse{SHA256: sha, Size: f.Size, ContentType: f.ContentType,
		Get: s.presigned(req.Method, req.URL, req.SignedHeader)}, nil
}

// isCode reports whether err is an S3 API error with code.
func isCode(err error, code string) bool {
	var ae interface{ ErrorCode() string }
	return err != nil && errors.As(err, &ae) && ae.ErrorCode() == code
}

// isNotFound reports a 404 of HeadObject (which has no body, so no code
// beyond "NotFound") or GetObject.
func isNotFound(err error) bool {
	var nf *s3types.NotFound
	var nk *s3types.NoSuchKey
	return errors.As(err, &nf) || errors.As(err, &nk) || isCode(err, "NotFound") || isCode(err, "NoSuchKey")
}

// downloadable says why f cannot be downloaded, or nil.
func downloadable(f File) error {
	switch {
	case f.State == filekey.StateDeleted:
		return ErrDeleted
	case f.UnsyncedAt != nil:
		return ErrUnsynced
	case f.State == filekey.StatePresent:
		return nil
	case f.State == filekey.StateArchived:
		return ErrArchived
	case f.State == filekey.StateArchiving:
		return ErrArchiving
	case f.State == filekey.StateRestoring:
		return ErrRestoring
	}
	return ErrNotPresent
}
