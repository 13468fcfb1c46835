package store

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// TestInsertRowsAsGormDoes: the array insert of new records (insertRecords)
// writes every column of every kind's table as gorm's CreateInBatches
// wrote it, and leaves the rows in memory as gorm left them: defaults for
// zero values (a JSON column's 'null', an empty local version), the time of the
// insert for a zero created_at and updated_at, text of any content. The
// same rows are created through gorm for clinic 1 and through the arrays
// for clinic 2 and read back column by column.
func TestInsertRowsAsGormDoes(t *testing.T) {
	s := open(t)
	now := time.Date(2026, 12, 6, 15, 4, 5, 123456789, time.UTC)
	db := s.db.Session(&gorm.Session{NowFunc: func() time.Time { return now }})
	for _, spec := range records.Kinds {
		t.Run(string(spec.Kind), func(t *testing.T) {
			k, _ := opsFor(spec.Kind)
			var viaGorm, viaArrays, viaCommit []Record
			for v := range 4 {
				viaGorm = append(viaGorm, testRow(t, k, 1, v))
				viaArrays = append(viaArrays, testRow(t, k, 2, v))
				viaCommit = append(viaCommit, testRow(t, k, 3, v))
			}
			typed := reflect.MakeSlice(reflect.SliceOf(reflect.TypeOf(viaGorm[0])), 0, len(viaGorm))
			for _, r := range viaGorm {
				typed = reflect.Append(typed, reflect.ValueOf(r))
			}
			if err := db.CreateInBatches(typed.Interface(), 1000).Error; err != nil {
				t.Fatalf("CreateInBatches = %v", err)
			}
			err := db.Transaction(func(tx *gorm.DB) error {
				writes, err := insertRecords(tx, viaArrays)
				if err != nil {
					return err
				}
				return execTogether(tx, writes)
			})
			if err != nil {
				t.Fatalf("insertRecords = %v", err)
			}
			// And as a transaction's last statement, whose arguments
			// commitWith encodes itself (encodeParams).
			if err := commitRows(context.Background(), s, db, viaCommit); err != nil {
				t.Fatalf("commitWith(insertRecords) = %v", err)
			}
			want := tableRows(t, s, spec.Table, 1)
			for clinic, how := range map[ids.ID]string{2: "insertRecords", 3: "insertRecords in commitWith"} {
				got := tableRows(t, s, spec.Table, clinic)
				if len(got) != len(want) {
					t.Fatalf("%s: %d rows inserted, want %d", how, len(got), len(want))
				}
				for i := range want {
					for col, w := range want[i] {
						if g, ok := got[i][col]; !ok || string(g) != string(w) {
							t.Errorf("%s: row %d: %s = %s, want %s (as gorm wrote it)", how, i, col, g, w)
						}
					}
					if len(got[i]) != len(want[i]) {
						t.Errorf("%s: row %d has %d columns, want %d", how, i, len(got[i]), len(want[i]))
					}
				}
			}
			// The filled row (1) sets every column away from the zero
			// row's (0): a column the insert left out would read back as
			// its default and differ from gorm's.
			for col, w := range want[1] {
				if col != "clinic_id" && string(want[0][col]) == string(w) {
					t.Errorf("test data: column %s is %s in the zero row and the filled one", col, w)
				}
			}
			for i := range viaGorm {
				viaArrays[i].meta().ClinicID = 1
				if !reflect.DeepEqual(viaArrays[i], viaGorm[i]) {
					t.Errorf("row %d after the insert:\n%+v\nwant (as gorm left it)\n%+v", i, viaArrays[i], viaGorm[i])
				}
			}
		})
	}
}

// commitRows inserts rs (insertRecords through db, for its clock) as the
// last statement of a pinned transaction, sent with its commit.
func commitRows(ctx context.Context, s *Store, db *gorm.DB, rs []Record) error {
	p, err := s.pin(ctx)
	if err != nil {
		return err
	}
	defer p.release()
	if err := p.beginWith(ctx); err != nil {
		return err
	}
	writes, err := insertRecords(db, rs)
	if err != nil {
		return err
	}
	last := together(writes)
	return p.commitWith(ctx, &last)
}

// testRow is a record of kind k of clinic whose fields are: v 0, all zero
// (the kind's defaults); 1, all set, text with quotes, backslashes, braces,
// commas and non-ASCII; 2, all set, text "NULL" and an empty list; 3, the
// sample content.
func testRow(t *testing.T, k kindOps, clinic ids.ID, v int) Record {
	t.Helper()
	r := k.newRow()
	m := r.meta()
	m.ClinicID, m.ID = clinic, ids.ID(100+v)
	m.Version, m.Origin, m.LastChangeID, m.CloudSeq = version.First, string(wire.OriginLocal), ids.ID(500+v), int64(v+1)
	if v == 3 {
		r.setContent(records.Sample(k.spec.Kind, v, map[wire.Kind]ids.ID{wire.KindPatient: 7, wire.KindStudy: 8, wire.KindDoctor: 9}))
		m.CreatedAt = time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
		return r
	}
	if v == 0 {
		return r
	}
	at := time.Date(2024, 5, 6, 7, 8, 9, 987654321, time.UTC)
	m.Version, m.LocalVersion = version.V{A: 3, B: 2}, version.V{A: 2, B: 1}
	m.Deleted, m.Conflict, m.ConflictOf, m.Fence, m.EditSession = true, true, 77, 12, "sess-"+fmt.Sprint(v)
	m.Unfenced, m.RetentionState, m.Unsynced = true, RetentionDeleted, true
	m.Origin = string(wire.OriginCloud)
	m.CreatedAt, m.UpdatedAt = at, at.Add(time.Hour)
	text := `Kim "the" Lee \ {a,b}, Zoë 金`
	list := []string{"a", `b"c`, `d\e`, "{f,g}", ""}
	if v == 2 {
		text, list = "NULL", []string{}
	}
	c := reflect.New(reflect.TypeOf(r.content())).Elem()
	for i := range c.NumField() {
		f := c.Field(i)
		switch {
		case f.Type() == reflect.TypeFor[records.JSONText]():
			f.SetString(`{"k":"` + fmt.Sprint(v) + `"}`)
		case f.Kind() == reflect.String:
			f.SetString(text + " " + c.Type().Field(i).Name)
		case f.Kind() == reflect.Int64:
			f.SetInt(int64(1000*v + i + 1))
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.Type() == reflect.TypeFor[[]string]():
			f.Set(reflect.ValueOf(list))
		default:
			t.Fatalf("%s.%s: fill a %s in testRow", k.spec.Kind, c.Type().Field(i).Name, f.Type())
		}
	}
	r.setContent(c.Interface().(records.Content))
	return r
}

// tableRows reads clinic's rows of table (a record table's in id order,
// the changes in cloud_seq order), each column as JSON, times in UTC.
func tableRows(t *testing.T, s *Store, table string, clinic ids.ID) []map[string]json.RawMessage {
	t.Helper()
	order := "id"
	if table == "changes" {
		order = "cloud_seq"
	}
	var js []string
	err := s.db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SET LOCAL TIME ZONE 'UTC'").Error; err != nil {
			return err
		}
		return tx.Raw("SELECT to_jsonb(r)::text FROM "+table+" r WHERE clinic_id = ? ORDER BY "+order, clinic).Scan(&js).Error
	})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]map[string]json.RawMessage, len(js))
	for i, j := range js {
		if err := json.Unmarshal([]byte(j), &out[i]); err != nil {
			t.Fatal(err)
		}
		delete(out[i], "clinic_id")
	}
	return out
}

// TestBackfillBatchAppliesOnce: a backfill's batch of new records of two
// clinics in one transaction (several kinds; a patient changed again and
// an image deleted in the same batch, which inserts what the batch created
// before it counts the image's file) writes the records as sent, the
// person who saved each change, and the change and outbox rows; its
// redelivery, whole or in part, applies nothing: no row twice, every row
// as it was.
func TestBackfillBatchAppliesOnce(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	clinics := []ids.ID{400, 401}
	for _, c := range clinics {
		enroll(t, s, c, "")
	}
	at := time.Date(2025, 2, 3, 4, 5, 6, 789000, time.UTC)
	const (
		sha  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		sha2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	)
	image := records.Image{StudyID: 20, Modality: "PANO", StudyDate: "2025-01-01", Tags: []string{"x", `"y"`}, SHA256: sha, Size: 5}
	batch := func(clinic ids.ID) []wire.Envelope {
		var es []wire.Envelope
		add := func(e wire.Envelope) {
			e.ChangeID = ids.ID(len(es) + 1)
			e.At = at.Add(time.Duration(len(es)) * time.Second)
			e.SavedBy, e.SavedByName = 31, `Dr. "K"`
			es = append(es, e)
		}
		add(changeOf(clinic, 0, 10, records.Patient{Name: `Kim "K" Lee`, ChartNo: "C-1"}))
		add(changeOf(clinic, 0, 20, records.Study{PatientID: 10, StudyDate: "2025-01-01", Description: `a\b`}))
		add(changeOf(clinic, 0, 30, image))
		add(changeOf(clinic, 0, 40, records.Setting{Key: "viewer.k", Value: `{"a":[1,"b"]}`}))
		add(change(clinic, 0, 10, version.First, version.V{A: 1, B: 1}, "Kim Lee"))
		del := changeOf(clinic, 0, 30, image)
		del.Deleted, del.BaseVersion, del.NewVersion = true, version.First, version.V{A: 1, B: 1}
		add(del)
		live := image
		live.SHA256 = sha2
		add(changeOf(clinic, 0, 31, live))
		return es
	}
	// Both files were un-synced before: the batch marks the one its live
	// image names synced, and the other, whose image it deleted, un-synced
	// again after it marked it synced.
	past := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range clinics {
		for _, h := range []string{sha, sha2} {
			f := files.File{ClinicID: c, SHA256: h, State: "present", Size: 5, CreatedAt: past, UpdatedAt: past, UnsyncedAt: &past}
			if err := s.db.Create(&f).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
	unsyncedAt := func(c ids.ID, h string) *time.Time {
		var f files.File
		if err := s.db.Take(&f, "clinic_id = ? AND sha256 = ?", c, h).Error; err != nil {
			t.Fatal(err)
		}
		return f.UnsyncedAt
	}
	checkFiles := func(when string) {
		t.Helper()
		for _, c := range clinics {
			if u := unsyncedAt(c, sha); u == nil || !u.After(past) {
				t.Errorf("%s: clinic %s: the deleted image's file unsynced_at = %v, want a time after %v", when, c, u, past)
			}
			if u := unsyncedAt(c, sha2); u != nil {
				t.Errorf("%s: clinic %s: the live image's file unsynced_at = %v, want none", when, c, u)
			}
		}
	}
	var groups []ClinicChanges
	for _, c := range clinics {
		groups = append(groups, ClinicChanges{Clinic: c, Changes: batch(c)})
	}
	res, err := s.ApplyUpMany(ctx, groups)
	if err != nil {
		t.Fatalf("ApplyUpMany = %v", err)
	}
	for i, r := range res {
		if r.Accepted != 7 || r.Duplicates != 0 || len(r.Changes) != 7 {
			t.Fatalf("clinic %s: ApplyUpMany = %+v, want 7 accepted", clinics[i], r)
		}
	}
	for _, c := range clinics {
		p := tableRows(t, s, "patients", c)
		if len(p) != 1 || string(p[0]["name"]) != `"Kim Lee"` || string(p[0]["chart_no"]) != `""` || string(p[0]["version"]) != `"1.1"` ||
			string(p[0]["local_version"]) != `"1.1"` || string(p[0]["created_at"]) != `"2025-02-03T04:05:06.000789+00:00"` || string(p[0]["updated_at"]) == "null" {
			t.Errorf("clinic %s: patients = %s", c, p)
		}
		im := tableRows(t, s, "images", c)
		if len(im) != 2 || string(im[0]["deleted"]) != "true" || string(im[0]["tags"]) != `"[\"x\",\"\\\"y\\\"\"]"` || string(im[0]["sha256"]) != `"`+sha+`"` ||
			string(im[0]["created_at"]) != `"2025-02-03T04:05:08.000789+00:00"` {
			t.Errorf("clinic %s: images = %s", c, im)
		}
		st := tableRows(t, s, "settings", c)
		if len(st) != 1 || string(st[0]["value"]) != `"{\"a\":[1,\"b\"]}"` || string(st[0]["origin"]) != `"local"` {
			t.Errorf("clinic %s: settings = %s", c, st)
		}
		if sd := tableRows(t, s, "studies", c); len(sd) != 1 || string(sd[0]["description"]) != `"a\\b"` {
			t.Errorf("clinic %s: studies = %s", c, sd)
		}
		for i, ch := range tableRows(t, s, "changes", c) {
			if string(ch["saved_by"]) != "31" || string(ch["saved_by_name"]) != `"Dr. \"K\""` || string(ch["cloud_seq"]) != fmt.Sprint(i+1) {
				t.Errorf("clinic %s: change %d = %s", c, i, ch)
			}
		}
	}
	snapshot := func() string {
		var b []byte
		for _, table := range []string{"patients", "studies", "images", "settings", "changes"} {
			for _, c := range clinics {
				j, _ := json.Marshal(tableRows(t, s, table, c))
				b = append(b, j...)
			}
		}
		var n int64
		if err := s.db.Raw("SELECT count(*) FROM outbox").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s outbox=%d", b, n)
	}
	before := snapshot()
	if !strings.HasSuffix(before, " outbox=14") {
		t.Fatalf("after the batch: %s, want 14 outbox rows", before[strings.LastIndex(before, " "):])
	}
	checkFiles("after the batch")
	res, err = s.ApplyUpMany(ctx, groups)
	if err != nil {
		t.Fatalf("ApplyUpMany again = %v", err)
	}
	for i, r := range res {
		if r.Accepted != 0 || r.Duplicates != 7 || len(r.Changes) != 0 {
			t.Fatalf("clinic %s: redelivered ApplyUpMany = %+v, want 7 duplicates", clinics[i], r)
		}
	}
	if r := applyUp(t, s, 401, groups[1].Changes[2:4]...); r.Accepted != 0 || r.Duplicates != 2 {
		t.Fatalf("part redelivered: ApplyUp = %+v, want 2 duplicates", r)
	}
	if after := snapshot(); after != before {
		t.Fatalf("a redelivery changed the tables:\n%s\nwant\n%s", after, before)
	}
	checkFiles("after the redeliveries")
}

// TestRelayFindReadsEveryColumn: the relay's scan by position reads every
// column of a change as gorm reads it (each set apart from its default and
// from the others), and zero values for an outbox row whose change is
// gone.
func TestRelayFindReadsEveryColumn(t *testing.T) {
	s := open(t)
	at := time.Date(2025, 6, 7, 8, 9, 10, 123456000, time.UTC)
	ch := Change{ClinicID: 77, CloudSeq: 3, ChangeID: 11, Kind: "study", RecordID: 12, Origin: "cloud",
		BaseVersion: version.V{A: 1, B: 2}, NewVersion: version.V{A: 3, B: 4}, Deleted: true, Conflict: PolicyKeepBoth, ConflictOf: 13,
		Fence: 14, Unfenced: true, Session: "sess", Unsync: true, SavedBy: 15, SavedByName: `Dr. "N"`, Payload: `{"x":[1]}`,
		At: at, AcceptedAt: at.Add(time.Minute)}
	for _, v := range []any{&ch, &Outbox{ClinicID: 77, CloudSeq: 3}, &Outbox{ClinicID: 77, CloudSeq: 4}} {
		if err := s.db.Create(v).Error; err != nil {
			t.Fatal(err)
		}
	}
	var want Change
	if err := s.db.Take(&want, "clinic_id = 77 AND cloud_seq = 3").Error; err != nil {
		t.Fatal(err)
	}
	var found []relayRow
	err := s.relayTx(context.Background(), 10, func(rows []relayRow) ([]int64, error) {
		found = rows
		return nil, nil
	})
	if err != nil || len(found) != 2 {
		t.Fatalf("relayTx read %d rows, %v; want 2", len(found), err)
	}
	if r := found[0]; !r.HasChange || r.OutboxClinicID != 77 || r.OutboxCloudSeq != 3 || !reflect.DeepEqual(r.Change, want) {
		t.Errorf("relayTx row 0 = %+v\nwant the change %+v", r, want)
	}
	if r := found[1]; r.HasChange || r.OutboxCloudSeq != 4 || r.ChangeID != 0 || r.Payload != "" {
		t.Errorf("relayTx row 1 = %+v, want no change", r)
	}
}

// TestBatchReferencesExistence: a batch reads the records its contents
// only refer to narrowly (whether each exists), and decides as before: a
// study of a patient from an earlier batch is applied, one of a deleted
// patient too (a clinic's change may refer to a tombstone), one of a
// patient the cloud does not have parks until the patient arrives.
func TestBatchReferencesExistence(t *testing.T) {
	s := open(t)
	enroll(t, s, 500, "")
	del := change(500, 3, 2, version.First, version.V{A: 1, B: 1}, "Gone")
	del.Deleted = true
	applyUp(t, s, 500, change(500, 1, 1, version.V{}, version.First, "Kim"), change(500, 2, 2, version.V{}, version.First, "Lee"), del)
	study := func(changeID, id, patient ids.ID) wire.Envelope {
		return changeOf(500, changeID, id, records.Study{PatientID: patient, StudyDate: "2025-01-01"})
	}
	got := applyUp(t, s, 500, study(10, 100, 1), study(11, 101, 3), study(12, 102, 2))
	if got.Accepted != 2 || got.Parked != 1 {
		t.Fatalf("ApplyUp(studies) = %+v, want 2 accepted and 1 parked", got)
	}
	got = applyUp(t, s, 500, change(500, 20, 3, version.V{}, version.First, "Park"))
	if got.Accepted != 2 || got.Unparked != 1 {
		t.Fatalf("ApplyUp(the missing patient) = %+v, want it and the parked study accepted", got)
	}
	if sd := tableRows(t, s, "studies", 500); len(sd) != 3 || string(sd[1]["patient_id"]) != "3" {
		t.Fatalf("studies = %s, want 3 (the parked one of patient 3 among them)", sd)
	}
}
