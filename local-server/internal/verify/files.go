package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/scsync/scsync/local-server/internal/transfer"
	"github.com/scsync/scsync/shared/filekey"
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
	v.fcloud, v.fqueue, v.fdir = cloud, queue, dir
	return v
}

// sweepFiles appends the file differences to rep (and repairs them).
func (v *Verifier) sweepFiles(ctx context.Context, rep *Report, repair bool) error {
	files, err := v.st.Files(ctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	rep.Files = len(files)
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
		var cf filekey.File
		var cerr error
		if f.Wanted || copyPath == "" {
			cf, cerr = v.fcloud.Check(ctx, f.SHA256)
			var ce *transfer.CloudError
			if cerr != nil && (!errors.As(cerr, &ce) || ce.Status != http.StatusNotFound) {
				return fmt.Errorf("verify: cloud file %s: %w", f.SHA256, cerr)
			}
		}
		cloudHas := cerr == nil && cf.State == filekey.StatePresent
		if f.Wanted && !cloudHas && (cerr != nil || cf.State == filekey.StateFailed || cf.State == filekey.StateDeleted) {
			d := Difference{Kind: KindFile, SHA256: f.SHA256, Side: SideCloud, Repair: RepairUpload, What: "missing from S3"}
			if cerr == nil {
				d.What = "state " + cf.State
				if cf.Reason != "" {
					d.What += ": " + cf.Reason
				}
			}
			if copyPath == "" {
				d.Repair, d.Error = "", "no copy on the clinic's disk either"
			} else if repair {
				v.repairUpload(ctx, &d, copyPath, f.Size)
			}
			rep.Differences = append(rep.Differences, d)
		}
		if copyPath == "" {
			d := Difference{Kind: KindFile, SHA256: f.SHA256, Side: SideClinic, Repair: RepairDownload, What: "missing from the clinic's disk"}
			if !cloudHas {
				d.Repair, d.Error = "", "the cloud has no verified copy"
			} else if repair {
				if err := v.fqueue.Redownload(ctx, f.SHA256, filepath.Join(v.fdir, f.SHA256), f.Size); err != nil {
					d.Error = err.Error()
				} else {
					d.Repaired = true
				}
			}
			rep.Differences = append(rep.Differences, d)
		}
	}
	return nil
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
