package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/scsync/scsync/local-server/internal/store"
	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/wire"
)

// Repairs of files.
const (
	RepairUpload   = "upload"   // the clinic's copy is uploaded again
	RepairDownload = "download" // the cloud's copy is downloaded again
)

// KindFile is a Difference about a file; its SHA256 names it.
const KindFile wire.Kind = "file"

// FileCloud is what the file sweep needs of the cloud's file API.
type FileCloud interface {
	// CheckFiles checks up to filekey.MaxCheck files in one request.
	CheckFiles(ctx context.Context, shas []string) ([]filekey.CheckedFile, error)
	// Check checks one file; the sweep uses it with a cloud that does not
	// know CheckFiles' route.
	Check(ctx context.Context, sha string) (filekey.File, error)
}

// FileQueue is what the file sweep needs of the transfer worker.
type FileQueue interface {
	List(ctx context.Context, f transfer.Filter) ([]transfer.Transfer, error)
	Recheck(ctx context.Context, sha string) (int64, error)
	EnqueueUpload(ctx context.Context, u transfer.Upload) (transfer.Transfer, error)
	Redownload(ctx context.Context, sha, path string, size int64) error
}

// WithFiles adds the file sweep: every file a live record names is on the
// clinic's disk (where a finished transfer put or found it; a missing one
// is downloaded again into dir/<sha256>), and every file the cloud should
// hold is present in S3 with its size and SHA-256 (a missing one is
// uploaded again from the clinic's copy).
func (v *Verifier) WithFiles(cloud FileCloud, queue FileQueue, dir string) *Verifier {
	v.fcloud, v.fqueue, v.fdir, v.fbatch = cloud, queue, dir, filekey.MaxCheck
	return v
}

// sweepFiles appends the file differences to rep (and repairs them).
func (v *Verifier) sweepFiles(ctx context.Context, rep *Report, repair bool) error {
	files, err := v.st.Files(ctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	return v.sweepFileList(ctx, rep, files, repair)
}

// sweptFile is a file the cloud is asked about, with the clinic's copy
// and the cloud's answer: file, or !known when the cloud has no such file.
type sweptFile struct {
	store.FileOfRecords
	copyPath string
	known    bool
	file     filekey.File
}

// sweepFileList is sweepFiles of files. The files the cloud must be asked
// about are asked v.fbatch at a time (or one by one when the cloud does not
// know the batch route), then decided in order.
func (v *Verifier) sweepFileList(ctx context.Context, rep *Report, files []store.FileOfRecords, repair bool) error {
	rep.Files = len(files)
	perFile := false // the cloud refused the batch route: one Check per file for the rest of the run
	var pending []sweptFile
	flush := func() error {
		if err := v.askCloud(ctx, pending, &perFile); err != nil {
			return err
		}
		for _, sf := range pending {
			v.decideFile(ctx, rep, sf, repair)
		}
		pending = pending[:0]
		return nil
	}
	for _, f := range files {
		ts, err := v.fqueue.List(ctx, transfer.Filter{SHA256: f.SHA256})
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		copyPath, busy := clinicCopy(ts, f.Size)
		if busy || len(ts) == 0 {
			rep.InFlight++ // queued or moving; no row yet: fetchMissing queues it
			continue
		}
		// The cloud is asked about a file it should hold, or one the
		// clinic lost (to download it again); a file it need not hold that
		// the clinic has differs in nothing.
		if !f.Wanted && copyPath != "" {
			continue
		}
		pending = append(pending, sweptFile{FileOfRecords: f, copyPath: copyPath})
		if len(pending) == v.fbatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// askCloud fills in the cloud's answers for batch: one CheckFiles request,
// or, once the cloud has refused its route (*perFile, also set here), one
// Check per file. A failed request fails the sweep, as a failed check did.
func (v *Verifier) askCloud(ctx context.Context, batch []sweptFile, perFile *bool) error {
	if len(batch) == 0 {
		return nil
	}
	shas := make([]string, len(batch))
	for i, sf := range batch {
		shas[i] = sf.SHA256
	}
	if !*perFile {
		answers, err := v.fcloud.CheckFiles(ctx, shas)
		switch {
		case err == nil:
			for i, a := range answers {
				switch {
				case a.File != nil:
					batch[i].known, batch[i].file = true, *a.File
				case a.Code != httpapi.CodeNotFound:
					return fmt.Errorf("verify: cloud file %s: %s", a.SHA256, a.Code)
				}
			}
			return nil
		case noBatchRoute(err):
			*perFile = true
			v.log.Info("the cloud has no batch check of files; checking them one by one", "err", err)
		default:
			return fmt.Errorf("verify: cloud files: %w", err)
		}
	}
	for i := range batch {
		cf, err := v.fcloud.Check(ctx, batch[i].SHA256)
		var ce *transfer.CloudError
		switch {
		case err == nil:
			batch[i].known, batch[i].file = true, cf
		case !errors.As(err, &ce) || ce.Status != http.StatusNotFound:
			return fmt.Errorf("verify: cloud file %s: %w", batch[i].SHA256, err)
		}
	}
	return nil
}

// noBatchRoute tells whether err is the answer of a cloud that predates
// POST …/files/check: its mux finds GET …/files/{sha256} for the path and
// answers 405, or (a router in front that knows neither) 404 not_found or a
// 404 that is not a JSON error. The route itself never answers 404 to the
// clinic's own id (an unknown file is an entry of the answer), so this is
// not mistaken for a file the cloud lacks; a clinic the cloud does not know
// gets 404 from every route, and the per-file checks say so as before.
func noBatchRoute(err error) bool {
	var ce *transfer.CloudError
	if !errors.As(err, &ce) {
		return false
	}
	return ce.Status == http.StatusMethodNotAllowed ||
		ce.Status == http.StatusNotFound && (ce.Code == httpapi.CodeNotFound || ce.Code == transfer.PlainCode(http.StatusNotFound))
}

// decideFile appends sf's differences to rep (and repairs them), from what
// the clinic holds and what the cloud answered.
func (v *Verifier) decideFile(ctx context.Context, rep *Report, sf sweptFile, repair bool) {
	cf := sf.file
	cloudHas := sf.known && cf.State == filekey.StatePresent
	if sf.Wanted && !cloudHas && (!sf.known || cf.State == filekey.StateFailed || cf.State == filekey.StateDeleted) {
		d := Difference{Kind: KindFile, SHA256: sf.SHA256, Side: SideCloud, Repair: RepairUpload, What: "missing from S3"}
		if sf.known {
			d.What = "state " + cf.State
			if cf.Reason != "" {
				d.What += ": " + cf.Reason
			}
		}
		if sf.copyPath == "" {
			d.Repair, d.Error = "", "no copy on the clinic's disk either"
		} else if repair {
			v.repairUpload(ctx, &d, sf.copyPath, sf.Size)
		}
		rep.Differences = append(rep.Differences, d)
	}
	if sf.copyPath == "" {
		d := Difference{Kind: KindFile, SHA256: sf.SHA256, Side: SideClinic, Repair: RepairDownload, What: "missing from the clinic's disk"}
		if !cloudHas {
			d.Repair, d.Error = "", "the cloud has no verified copy"
		} else if repair {
			if err := v.fqueue.Redownload(ctx, sf.SHA256, filepath.Join(v.fdir, sf.SHA256), sf.Size); err != nil {
				d.Error = err.Error()
			} else {
				d.Repaired = true
			}
		}
		rep.Differences = append(rep.Differences, d)
	}
}

// clinicCopy returns the path of a finished transfer's file that is on
// disk with the right size (an upload's source or a download's
// destination), and whether a transfer of the file is still under way.
func clinicCopy(ts []transfer.Transfer, size int64) (string, bool) {
	found, busy := "", false
	for _, t := range ts {
		switch t.State {
		case transfer.StatePresent:
			if st, err := os.Stat(t.Path); err == nil && st.Mode().IsRegular() && (size == 0 || st.Size() == size) && found == "" {
				found = t.Path
			}
		case transfer.StateFailed:
		default:
			busy = true
		}
	}
	return found, busy
}

func (v *Verifier) repairUpload(ctx context.Context, d *Difference, path string, size int64) {
	n, err := v.fqueue.Recheck(ctx, d.SHA256)
	if err == nil && n == 0 { // the clinic's copy came down: send it from there
		_, err = v.fqueue.EnqueueUpload(ctx, transfer.Upload{Path: path, SHA256: d.SHA256, Size: size})
	}
	if err != nil {
		d.Error = err.Error()
		return
	}
	d.Repaired = true
}
