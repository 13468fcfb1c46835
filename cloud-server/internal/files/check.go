package files

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/httpapi"
	"github.com/scsync/scsync/shared/ids"
)

// checkConcurrency bounds the HeadObject calls of one CheckMany: a batch of
// filekey.MaxCheck present files takes 32 rounds, not 256 one after another,
// and one clinic's sweep cannot flood S3.
const checkConcurrency = 8

// CheckMany is Check of up to filekey.MaxCheck of clinic's files at once
// (POST …/files/check, sc-local's verify sweep): one query loads their rows,
// then the present ones are checked with S3 (checkConcurrency at a time),
// with Check's side effect (an object gone or different turns its file
// failed). The answer has one entry per requested SHA-256, in order; a file
// the clinic has no row for is an entry with Code not_found, so the batch
// still answers. Rows are looked up by the authenticated clinic only:
// another clinic's file of the same SHA-256 is not found here. An S3 error
// other than a missing object fails the whole batch.
func (s *Service) CheckMany(ctx context.Context, clinic ids.ID, shas []string) ([]filekey.CheckedFile, error) {
	if len(shas) > filekey.MaxCheck {
		return nil, fmt.Errorf("%w: %d files, at most %d", ErrTooManyFiles, len(shas), filekey.MaxCheck)
	}
	want := make([]string, len(shas))
	for i, sha := range shas {
		p, err := filekey.ParseSHA256(sha)
		if err != nil {
			return nil, fmt.Errorf("sha256[%d]: %w", i, err)
		}
		want[i] = p
	}
	var rows []File
	if len(want) > 0 {
		if err := s.db.WithContext(ctx).Where("clinic_id = ? AND sha256 IN ?", clinic, want).Find(&rows).Error; err != nil {
			return nil, fmt.Errorf("files: load %d files: %w", len(want), err)
		}
	}
	// One check per distinct file, whatever the duplicates.
	checked := make([]filekey.File, len(rows))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(checkConcurrency)
	for i, f := range rows {
		g.Go(func() error {
			v, err := s.check(gctx, f)
			checked[i] = v
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	bySHA := make(map[string]*filekey.File, len(rows))
	for i := range checked {
		bySHA[checked[i].SHA256] = &checked[i]
	}
	out := make([]filekey.CheckedFile, len(want))
	for i, sha := range want {
		out[i] = filekey.CheckedFile{SHA256: sha, File: bySHA[sha]}
		if out[i].File == nil {
			out[i].Code = httpapi.CodeNotFound
		}
	}
	return out, nil
}
