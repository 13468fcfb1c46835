package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

// TestImportIsHistory: an import writes records in order (a line may name
// an earlier one), all or nothing, as history the backfill sends — not on
// the live lane; files only backfilled records name are backfill files.
func TestImportIsHistory(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	got, err := s.Import(ctx, []Import{{Kind: wire.KindPatient, Content: records.Patient{Name: "Old Patient"}}})
	if err != nil || len(got) != 1 {
		t.Fatalf("import patient: %v %v", got, err)
	}
	sha := strings.Repeat("ab", 32)
	got2, err := s.Import(ctx, []Import{
		{Kind: wire.KindStudy, Content: records.Study{PatientID: got[0], StudyDate: "2019-05-01"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, []Import{{Kind: wire.KindImage, Content: records.Image{StudyID: got2[0], Modality: "PANO", StudyDate: "2019-05-01", SHA256: sha, Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	// A bad item fails the whole call and names its position.
	_, err = s.Import(ctx, []Import{
		{Kind: wire.KindPatient, Content: records.Patient{Name: "Would Be Rolled Back"}},
		{Kind: wire.KindStudy, Content: records.Study{PatientID: ids.ID(424242), StudyDate: "2019-01-01"}},
	})
	var ie *ImportError
	if !errors.As(err, &ie) || ie.Index != 1 || !errors.Is(err, ErrMissingRef) {
		t.Fatalf("import with a missing reference = %v, want ImportError at 1 wrapping ErrMissingRef", err)
	}
	if _, err := s.Import(ctx, []Import{{Kind: wire.KindPatient, Content: records.Patient{}}}); !errors.Is(err, records.ErrInvalid) {
		t.Fatalf("import of an invalid patient = %v", err)
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Excluded != 3 || st.Pending != 0 || st.Outbox != 0 {
		t.Fatalf("after the import: %+v, want 3 excluded records and nothing queued", st)
	}
	if m, _ := get(t, s, wire.KindPatient, got[0]); m.Version.String() != "1.0" || m.Queued {
		t.Fatalf("imported patient meta %+v", m)
	}
	if w, err := s.FileWanted(ctx, sha); err != nil || w.Wanted {
		t.Fatalf("file of an imported, unsent image: %+v %v; want not wanted yet", w, err)
	}
	// The backfill takes the history, parents first; then the image's file
	// is a backfill file.
	b, err := s.Backfill(ctx, 100)
	if err != nil || b.Records != 3 {
		t.Fatalf("backfill: %+v %v", b, err)
	}
	sent := outbox(t, s)
	if len(sent) != 3 || sent[0].Kind != wire.KindPatient || sent[1].Kind != wire.KindStudy || sent[2].Kind != wire.KindImage {
		t.Fatalf("backfilled %v, want patient, study, image", sent)
	}
	if w, err := s.FileWanted(ctx, sha); err != nil || !w.Wanted || w.Live {
		t.Fatalf("file of a backfilled image: %+v %v; want wanted, not live", w, err)
	}
	// A live record naming the same file makes it a live file.
	save(t, s, Edit{Kind: wire.KindImage, Content: records.Image{StudyID: got2[0], Modality: "CBCT", StudyDate: "2019-05-01", SHA256: sha, Size: 10}})
	if w, err := s.FileWanted(ctx, sha); err != nil || !w.Live {
		t.Fatalf("file of a live image: %+v %v; want live", w, err)
	}
}
