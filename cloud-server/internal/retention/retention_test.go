package retention

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/wire"
)

const oldDate = "2019-03-04"

func today() string { return time.Now().UTC().Format(time.DateOnly) }

// An un-synced record's file is unreachable at once, kept through the grace
// period, then deleted from S3 exactly once by nodes sweeping together; the
// row stays as the trail; a later re-sync gets the clinic's upload
// accepted again. Another clinic's object with the same bytes is untouched.
func TestUnsyncedFileDeletedAfterGrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	a, _ := e.clinic(t)
	b, _ := e.clinic(t)
	data := randomBytes(t, 70*1024)
	sha := e.upload(t, a, data)
	if got := e.upload(t, b, data); got != sha {
		t.Fatal("same bytes, different sha")
	}
	studyA, studyB := e.study(t, a, today()), e.study(t, b, today())
	imgA := e.image(t, a, studyA, today(), sha)
	imgB := e.image(t, b, studyB, today(), sha)
	content := records.Image{StudyID: studyA, Modality: "PANO", StudyDate: today(), SHA256: sha, Size: 1}

	if got, err := e.download(t, e.fs, a, sha); err != nil || got != sha {
		t.Fatalf("download before unsync = %s, %v", got, err)
	}
	e.unsync(t, a, wire.KindImage, imgA)
	if _, err := e.download(t, e.fs, a, sha); !errors.Is(err, files.ErrUnsynced) {
		t.Fatalf("download after unsync = %v, want ErrUnsynced", err)
	}
	if f := e.stat(t, a, sha); f.UnsyncedAt == nil || f.State != filekey.StatePresent {
		t.Fatalf("Stat after unsync = %+v, want present with unsynced_at", f)
	}

	// Within the grace period (the default 7 days) nothing is deleted.
	if n, err := e.fs.ExpireUnsynced(ctx); err != nil || n != 0 {
		t.Fatalf("ExpireUnsynced(within grace) = %d, %v; want 0", n, err)
	}
	if !e.exists(t, e.hot, a, sha) {
		t.Fatal("object deleted within the grace period")
	}

	// Two nodes whose grace has passed sweep at once: one deletion.
	nodes := []*files.Service{
		e.fileService(t, func(c *files.Config) { c.UnsyncedGrace = 0 }),
		e.fileService(t, func(c *files.Config) { c.UnsyncedGrace = 0 }),
	}
	var wg sync.WaitGroup
	counts := make([]int, len(nodes))
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() { counts[i], errs[i] = n.ExpireUnsynced(ctx) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || counts[0]+counts[1] != 1 {
		t.Fatalf("concurrent ExpireUnsynced = %v %v, errors %v %v; want one deletion in total", counts[0], counts[1], errs[0], errs[1])
	}
	if e.exists(t, e.hot, a, sha) {
		t.Fatal("object still in S3 after the grace period")
	}
	f := e.stat(t, a, sha)
	if f.State != filekey.StateDeleted || f.RemovedAt == nil || f.Reason == "" {
		t.Fatalf("Stat after expiry = %+v, want deleted with removed_at and reason", f)
	}
	if _, err := e.download(t, e.fs, a, sha); !errors.Is(err, files.ErrDeleted) {
		t.Fatalf("download after expiry = %v, want ErrDeleted", err)
	}
	// Clinic B's object (same bytes, its own key) and record are untouched.
	if !e.exists(t, e.hot, b, sha) || e.meta(t, b, wire.KindImage, imgB).Deleted {
		t.Fatal("clinic B's object or record touched")
	}
	if got, err := e.download(t, e.fs, b, sha); err != nil || got != sha {
		t.Fatalf("clinic B download = %s, %v", got, err)
	}

	// Synced again after the deletion: the clinic's upload is accepted.
	e.resync(t, a, wire.KindImage, imgA, content)
	if f := e.stat(t, a, sha); f.UnsyncedAt != nil || f.State != filekey.StateDeleted {
		t.Fatalf("Stat after re-sync = %+v, want deleted, no longer unsynced", f)
	}
	begin, err := e.fs.BeginUpload(ctx, a, sha, int64(len(data)), "image/png")
	if err != nil || begin.Present || begin.Put == nil {
		t.Fatalf("BeginUpload after deletion = %+v, %v; want a new upload", begin, err)
	}
	e.upload(t, a, data)
	if got, err := e.download(t, e.fs, a, sha); err != nil || got != sha {
		t.Fatalf("download after re-upload = %s, %v", got, err)
	}
}

// Un-sync then re-sync within the grace period: reachable again and spared
// by the sweep. A file another live record still names stays reachable.
func TestResyncBeforeGrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	a, _ := e.clinic(t)
	sha := e.upload(t, a, randomBytes(t, 10*1024))
	study := e.study(t, a, today())
	img1 := e.image(t, a, study, today(), sha)
	img2 := e.create(t, a, records.Capture{StudyID: study, SHA256: sha, Size: 1})

	e.unsync(t, a, wire.KindImage, img1)
	if got, err := e.download(t, e.fs, a, sha); err != nil || got != sha {
		t.Fatalf("download with a capture still naming the file = %s, %v", got, err)
	}
	e.unsync(t, a, wire.KindCapture, img2)
	if _, err := e.download(t, e.fs, a, sha); !errors.Is(err, files.ErrUnsynced) {
		t.Fatalf("download with no live record = %v, want ErrUnsynced", err)
	}
	e.resync(t, a, wire.KindImage, img1, records.Image{StudyID: study, Modality: "PANO", StudyDate: today(), SHA256: sha, Size: 1})
	if got, err := e.download(t, e.fs, a, sha); err != nil || got != sha {
		t.Fatalf("download after re-sync = %s, %v", got, err)
	}
	sweeper := e.fileService(t, func(c *files.Config) { c.UnsyncedGrace = 0 })
	if n, err := sweeper.ExpireUnsynced(ctx); err != nil || n != 0 {
		t.Fatalf("ExpireUnsynced after re-sync = %d, %v; want 0", n, err)
	}
	if !e.exists(t, e.hot, a, sha) {
		t.Fatal("re-synced file deleted")
	}
}

// Delete retention takes old dated records out with un-sync tombstones
// (never a plain delete), children before their study, leaves patients
// and new records alone, sends the old file through the grace deletion,
// does nothing twice, and never touches another clinic.
func TestDeleteRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	a, _ := e.clinic(t)
	b, _ := e.clinic(t)
	shaOld := e.upload(t, a, randomBytes(t, 4096))
	shaNew := e.upload(t, a, randomBytes(t, 4096))
	oldStudy := e.study(t, a, oldDate)
	oldImg := e.image(t, a, oldStudy, oldDate, shaOld)
	oldReport := e.create(t, a, records.Report{StudyID: oldStudy, Title: "R", Status: "final"})
	newStudy := e.study(t, a, today())
	newImg := e.image(t, a, newStudy, today(), shaNew)
	bStudy := e.study(t, b, oldDate)
	bImg := e.image(t, b, bStudy, oldDate, e.upload(t, b, randomBytes(t, 1024)))
	if _, err := e.st.SetRetention(ctx, b, store.RetentionKeep, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.SetRetention(ctx, a, store.RetentionDelete, 30); err != nil {
		t.Fatal(err)
	}
	before := len(e.changes(t, a))

	if err := e.svc.RunOnce(ctx); err != nil {
		t.Fatalf("RunOnce = %v", err)
	}
	gone := map[wire.Kind]bool{}
	chs := e.changes(t, a)[before:]
	for _, ch := range chs {
		if !ch.Deleted || !ch.Unsync || ch.Origin != wire.OriginCloud {
			t.Fatalf("retention change %+v, want an un-sync tombstone from the cloud", ch)
		}
		gone[ch.Kind] = true
	}
	if len(chs) != 3 || !gone[wire.KindImage] || !gone[wire.KindReport] || !gone[wire.KindStudy] || chs[2].Kind != wire.KindStudy {
		t.Fatalf("retention changes = %+v, want tombstones of image, report, then study", chs)
	}
	for _, id := range []struct {
		k wire.Kind
		m store.Meta
	}{{wire.KindImage, e.meta(t, a, wire.KindImage, oldImg)}, {wire.KindReport, e.meta(t, a, wire.KindReport, oldReport)}, {wire.KindStudy, e.meta(t, a, wire.KindStudy, oldStudy)}} {
		if !id.m.Deleted || id.m.RetentionState != store.RetentionDeleted {
			t.Errorf("%s after delete retention: deleted %v, retention_state %q; want deleted by retention", id.k, id.m.Deleted, id.m.RetentionState)
		}
	}
	for _, m := range []store.Meta{e.meta(t, a, wire.KindImage, newImg), e.meta(t, a, wire.KindStudy, newStudy), e.meta(t, b, wire.KindImage, bImg), e.meta(t, b, wire.KindStudy, bStudy)} {
		if m.Deleted || m.RetentionState != "" {
			t.Errorf("record %s touched: %+v", m.ID, m)
		}
	}
	ps, err := e.st.List(ctx, a, wire.KindPatient, store.ListQuery{})
	if err != nil || len(ps) != 2 {
		t.Fatalf("live patients = %d, %v; want both (undated kinds are never processed)", len(ps), err)
	}
	if _, err := e.download(t, e.fs, a, shaOld); !errors.Is(err, files.ErrUnsynced) {
		t.Fatalf("download of the old image's file = %v, want ErrUnsynced", err)
	}
	if got, err := e.download(t, e.fs, a, shaNew); err != nil || got != shaNew {
		t.Fatalf("download of the new image's file = %s, %v", got, err)
	}
	evs, err := e.st.RetentionEvents(ctx, a, 10)
	if err != nil || len(evs) != 3 || evs[0].Action != store.RetentionDeleted || evs[0].CloudSeq == 0 || evs[0].Reason == "" {
		t.Fatalf("retention events = %+v, %v; want 3 deletions naming their tombstones", evs, err)
	}

	// Again: nothing more to do (and the claim keeps a second run away).
	if _, err := e.svc.Apply(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.changes(t, a)); n != before+3 {
		t.Fatalf("changes after a second run = %d, want %d", n, before+3)
	}
	v, err := e.svc.State(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if v.Policy.RunAt == nil || v.Policy.Mode != store.RetentionDelete || v.Files.Unsynced != 1 {
		t.Fatalf("State = %+v, want the policy run and one unsynced file", v)
	}
	for _, c := range v.Records {
		if c.Kind == wire.KindImage && (c.Deleted != 1 || c.Live != 1) {
			t.Fatalf("image counts = %+v, want 1 retention-deleted, 1 live", c)
		}
	}

	// The clinic syncs the old image again: it is live, no longer
	// marked, its file reachable.
	e.resync(t, a, wire.KindStudy, oldStudy, records.Study{PatientID: e.studyPatient(t, a, oldStudy), StudyDate: oldDate})
	e.resync(t, a, wire.KindImage, oldImg, records.Image{StudyID: oldStudy, Modality: "PANO", StudyDate: oldDate, SHA256: shaOld, Size: 1})
	if m := e.meta(t, a, wire.KindImage, oldImg); m.Deleted || m.RetentionState != "" {
		t.Fatalf("re-synced image = %+v, want live and unmarked", m)
	}
	if got, err := e.download(t, e.fs, a, shaOld); err != nil || got != shaOld {
		t.Fatalf("download after re-sync = %s, %v", got, err)
	}
}

// studyPatient is the patient of a study (tombstones keep their content).
func (e *env) studyPatient(t *testing.T, clinic, study ids.ID) ids.ID {
	t.Helper()
	r, err := e.st.Get(context.Background(), clinic, wire.KindStudy, study)
	if err != nil {
		t.Fatal(err)
	}
	return store.RecordContent(r).(records.Study).PatientID
}
