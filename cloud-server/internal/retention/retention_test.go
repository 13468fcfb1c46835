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

// Backup retention keeps the records, marks them backed-up (no change is
// replicated), moves their files to the cold bucket (gone from the hot
// one), and refuses downloads until a restore brings the very same bytes
// back; a restored record is left alone for the hold; restoring a study
// brings its children back; restores are idempotent; a file a newer
// record names stays hot; another clinic is untouched.
func TestBackupArchiveRestore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	a, _ := e.clinic(t)
	b, _ := e.clinic(t)
	imgData, capData, sharedData := randomBytes(t, 50*1024), randomBytes(t, 20*1024), randomBytes(t, 5*1024)
	shaImg, shaCap, shaShared := e.upload(t, a, imgData), e.upload(t, a, capData), e.upload(t, a, sharedData)
	shaB := e.upload(t, b, imgData)
	oldStudy := e.study(t, a, oldDate)
	img := e.image(t, a, oldStudy, oldDate, shaImg)
	capt := e.create(t, a, records.Capture{StudyID: oldStudy, ImageID: img, SHA256: shaCap, Size: 1})
	oldShared := e.image(t, a, oldStudy, oldDate, shaShared)
	newStudy := e.study(t, a, today())
	e.image(t, a, newStudy, today(), shaShared) // a newer record names the same file
	bImg := e.image(t, b, e.study(t, b, oldDate), oldDate, shaB)
	if _, err := e.st.SetRetention(ctx, a, store.RetentionBackup, 365); err != nil {
		t.Fatal(err)
	}
	seqBefore := len(e.changes(t, a))

	res, err := e.svc.Apply(ctx, a)
	if err != nil {
		t.Fatalf("Apply = %v", err)
	}
	if res.BackedUp != 3 || res.FilesArchived != 2 || res.Skipped != 1 {
		t.Fatalf("Apply = %+v, want 3 backed up (image, capture, study), 2 files archived, the shared one skipped", res)
	}
	if n := len(e.changes(t, a)); n != seqBefore {
		t.Fatalf("changes after backup = %d, want %d: backing up replicates nothing", n, seqBefore)
	}
	for _, r := range []struct {
		k  wire.Kind
		id ids.ID
		st string
	}{{wire.KindImage, img, store.RetentionBackedUp}, {wire.KindCapture, capt, store.RetentionBackedUp},
		{wire.KindStudy, oldStudy, store.RetentionBackedUp}, {wire.KindImage, oldShared, ""}} {
		if m := e.meta(t, a, r.k, r.id); m.Deleted || m.RetentionState != r.st {
			t.Errorf("%s %s: deleted %v, retention_state %q; want live, %q", r.k, r.id, m.Deleted, m.RetentionState, r.st)
		}
	}
	for _, sha := range []string{shaImg, shaCap} {
		if f := e.stat(t, a, sha); f.State != filekey.StateArchived || f.ArchivedAt == nil {
			t.Fatalf("Stat(%s) = %+v, want archived", sha, f)
		}
		if e.exists(t, e.hot, a, sha) || !e.exists(t, e.cold, a, sha) {
			t.Fatalf("%s: in hot %v, in cold %v; want only in cold", sha, e.exists(t, e.hot, a, sha), e.exists(t, e.cold, a, sha))
		}
		if _, err := e.download(t, e.fs, a, sha); !errors.Is(err, files.ErrArchived) {
			t.Fatalf("download of an archived file = %v, want ErrArchived", err)
		}
	}
	if !e.exists(t, e.hot, a, shaShared) || e.exists(t, e.cold, a, shaShared) {
		t.Fatal("the file a newer record names left the hot bucket")
	}
	if !e.exists(t, e.hot, b, shaB) || e.exists(t, e.cold, b, shaB) || e.meta(t, b, wire.KindImage, bImg).RetentionState != "" {
		t.Fatal("clinic B touched")
	}
	v, err := e.svc.State(ctx, a)
	if err != nil || v.Files.ByState[filekey.StateArchived] != 2 || v.Files.ByState[filekey.StatePresent] != 1 {
		t.Fatalf("State = %+v, %v; want 2 archived files, 1 present", v.Files, err)
	}

	// Restore the image's file: same bytes back in hot, gone from cold,
	// the image live again; a second restore changes nothing.
	got, err := e.svc.RestoreFile(ctx, a, shaImg, "clinic")
	if err != nil || len(got.Records) != 1 || got.Records[0].ID != img {
		t.Fatalf("RestoreFile = %+v, %v; want the image restored", got, err)
	}
	if e.exists(t, e.cold, a, shaImg) || !e.exists(t, e.hot, a, shaImg) {
		t.Fatal("restored object not back in the hot bucket only")
	}
	if sum, err := e.download(t, e.fs, a, shaImg); err != nil || sum != shaImg {
		t.Fatalf("download after restore = %s, %v; want sha %s", sum, err, shaImg)
	}
	if got, err := e.svc.RestoreFile(ctx, a, shaImg, "clinic"); err != nil || len(got.Records) != 0 || got.Files[0].State != filekey.StatePresent {
		t.Fatalf("second RestoreFile = %+v, %v; want a no-op", got, err)
	}
	if m := e.meta(t, a, wire.KindImage, img); m.RetentionState != "" {
		t.Fatalf("restored image retention_state = %q, want live", m.RetentionState)
	}
	// The policy leaves the restored image alone (hold).
	if res, err := e.svc.Apply(ctx, a); err != nil || res.BackedUp != 0 || e.stat(t, a, shaImg).State != filekey.StatePresent {
		t.Fatalf("Apply after restore = %+v, %v; want the restored image held", res, err)
	}

	// Restore the study: its capture and file come back too.
	got, err = e.svc.RestoreRecord(ctx, a, wire.KindStudy, oldStudy, "admin")
	if err != nil || len(got.Records) != 2 {
		t.Fatalf("RestoreRecord(study) = %+v, %v; want the capture and the study", got, err)
	}
	if sum, err := e.download(t, e.fs, a, shaCap); err != nil || sum != shaCap {
		t.Fatalf("capture download after restore = %s, %v", sum, err)
	}
	for _, m := range []store.Meta{e.meta(t, a, wire.KindCapture, capt), e.meta(t, a, wire.KindStudy, oldStudy)} {
		if m.RetentionState != "" {
			t.Fatalf("%s after restore: retention_state %q", m.ID, m.RetentionState)
		}
	}
	if _, err := e.svc.RestoreRecord(ctx, a, wire.KindStudy, oldStudy, "admin"); err != nil {
		t.Fatalf("second RestoreRecord = %v", err)
	}
	evs, _ := e.st.RetentionEvents(ctx, a, 20)
	restored := 0
	for _, ev := range evs {
		if ev.Action == store.RetentionRestored && ev.HoldUntil != nil {
			restored++
		}
	}
	if restored != 3 {
		t.Fatalf("restore events = %d, want 3 (image, capture, study)", restored)
	}

	// Deleting a backed-up record in the cloud sends its archived file
	// through the grace deletion, from the cold bucket.
	if _, err := e.st.SetRetention(ctx, a, store.RetentionKeep, 0); err != nil {
		t.Fatal(err)
	}
	img2Data := randomBytes(t, 3000)
	sha2 := e.upload(t, a, img2Data)
	img2 := e.image(t, a, oldStudy, oldDate, sha2)
	if _, err := e.fs.Archive(ctx, a, sha2); err != nil {
		t.Fatal(err)
	}
	e.unsync(t, a, wire.KindImage, img2)
	if n, err := e.fileService(t, func(c *files.Config) { c.UnsyncedGrace = 0 }).ExpireUnsynced(ctx); err != nil || n != 1 {
		t.Fatalf("ExpireUnsynced = %d, %v; want the archived file deleted", n, err)
	}
	if e.exists(t, e.cold, a, sha2) || e.stat(t, a, sha2).State != filekey.StateDeleted {
		t.Fatal("archived un-synced file not deleted from the cold bucket")
	}
}

// Two nodes archiving and restoring the same file at once agree: one copy,
// the object in exactly one bucket, no error but "in progress".
func TestConcurrentArchiveRestore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	a, _ := e.clinic(t)
	sha := e.upload(t, a, randomBytes(t, 256*1024))
	nodes := []*files.Service{e.fs, e.fileService(t, nil)}
	for _, step := range []struct {
		name string
		do   func(*files.Service) (filekey.File, error)
		want string
	}{
		{"archive", func(fs *files.Service) (filekey.File, error) { return fs.Archive(ctx, a, sha) }, filekey.StateArchived},
		{"restore", func(fs *files.Service) (filekey.File, error) { return fs.Restore(ctx, a, sha) }, filekey.StatePresent},
	} {
		var wg sync.WaitGroup
		errs := make([]error, len(nodes))
		for i, n := range nodes {
			wg.Go(func() { _, errs[i] = step.do(n) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && !errors.Is(err, files.ErrArchiving) && !errors.Is(err, files.ErrRestoring) {
				t.Fatalf("concurrent %s = %v", step.name, err)
			}
		}
		if f := e.stat(t, a, sha); f.State != step.want {
			t.Fatalf("after concurrent %s: state %s, want %s", step.name, f.State, step.want)
		}
		inHot, inCold := e.exists(t, e.hot, a, sha), e.exists(t, e.cold, a, sha)
		if inHot == inCold {
			t.Fatalf("after concurrent %s: in hot %v, in cold %v; want exactly one", step.name, inHot, inCold)
		}
	}
	if sum, err := e.download(t, e.fs, a, sha); err != nil || sum != sha {
		t.Fatalf("download = %s, %v", sum, err)
	}
}

// A node that died half way through an archive (row archiving, object
// copied or not) or a restore leaves work the next sweep finishes once it
// is older than stale_after; a fresh one is left to its node.
func TestResumeStaleMoves(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	a, _ := e.clinic(t)
	shaArch, shaRest := e.upload(t, a, randomBytes(t, 9000)), e.upload(t, a, randomBytes(t, 7000))
	if _, err := e.fs.Archive(ctx, a, shaRest); err != nil {
		t.Fatal(err)
	}
	setState := func(sha, state string, age time.Duration) {
		t.Helper()
		if err := e.st.DB().Model(&files.File{}).Where("clinic_id = ? AND sha256 = ?", a, sha).
			Updates(map[string]any{"state": state, "updated_at": time.Now().UTC().Add(-age)}).Error; err != nil {
			t.Fatal(err)
		}
	}
	setState(shaArch, filekey.StateArchiving, time.Minute)
	setState(shaRest, filekey.StateRestoring, time.Minute)
	if n, err := e.fs.ResumeStale(ctx); err != nil || n != 0 {
		t.Fatalf("ResumeStale(fresh moves) = %d, %v; want 0", n, err)
	}
	if _, err := e.fs.Archive(ctx, a, shaArch); !errors.Is(err, files.ErrArchiving) {
		t.Fatalf("Archive during another node's archive = %v, want ErrArchiving", err)
	}
	setState(shaArch, filekey.StateArchiving, 2*time.Hour)
	setState(shaRest, filekey.StateRestoring, 2*time.Hour)
	if n, err := e.fs.ResumeStale(ctx); err != nil || n != 2 {
		t.Fatalf("ResumeStale(stale moves) = %d, %v; want 2", n, err)
	}
	if f := e.stat(t, a, shaArch); f.State != filekey.StateArchived || e.exists(t, e.hot, a, shaArch) || !e.exists(t, e.cold, a, shaArch) {
		t.Fatalf("resumed archive: %+v, want archived, only in cold", f)
	}
	if sum, err := e.download(t, e.fs, a, shaRest); err != nil || sum != shaRest || e.exists(t, e.cold, a, shaRest) {
		t.Fatalf("resumed restore: download %s, %v; want the file, only in hot", sum, err)
	}
}
