package schema_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/cloud-server/internal/backups"
	"github.com/scsync/scsync/cloud-server/internal/files"
	"github.com/scsync/scsync/cloud-server/internal/mfa"
	"github.com/scsync/scsync/cloud-server/internal/schema"
	"github.com/scsync/scsync/cloud-server/internal/store"
	"github.com/scsync/scsync/shared/audit"
	"github.com/scsync/scsync/shared/auth"
	"github.com/scsync/scsync/shared/editing"
	"github.com/scsync/scsync/shared/records"
	"github.com/scsync/scsync/shared/testenv"
)

// open connects a pool of its own (as a separate sc-cloud node would) to
// the database at url.
func open(t *testing.T, url string) (*gorm.DB, *sql.DB) {
	t.Helper()
	db, err := gorm.Open(postgres.Open(url), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		testenv.Unavailable(t, "PostgreSQL", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db, sqlDB
}

// execFile runs the statements of a testdata file (each ending with ";" at
// the end of a line; lines starting with "--" are comments).
func execFile(t *testing.T, db *sql.DB, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range strings.Split(string(b), ";\n") {
		var lines []string
		for _, l := range strings.Split(stmt, "\n") {
			if !strings.HasPrefix(l, "--") {
				lines = append(lines, l)
			}
		}
		if s := strings.TrimSpace(strings.Join(lines, "\n")); s != "" {
			if _, err := db.Exec(s); err != nil {
				t.Fatalf("%s: %v\n%s", name, err, s)
			}
		}
	}
}

// catalog is db's schema as gorm's migrator reads it, goose's own table
// left out: every column (position, type, length, nullability, default),
// index (its definition) and constraint, and every sequence.
func catalog(t *testing.T, db *sql.DB) []string {
	t.Helper()
	var out []string
	out = append(out, lines(t, db, `SELECT 'column', table_name, column_name, ordinal_position, data_type,
		COALESCE(character_maximum_length, 0), is_nullable, COALESCE(column_default, '')
		FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'goose_db_version'`)...)
	out = append(out, lines(t, db, `SELECT 'index', tablename, indexname, indexdef FROM pg_indexes
		WHERE schemaname = 'public' AND tablename <> 'goose_db_version'`)...)
	out = append(out, lines(t, db, `SELECT 'constraint', conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
		FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'goose_db_version'`)...)
	out = append(out, lines(t, db, `SELECT 'sequence', sequencename, data_type, increment_by FROM pg_sequences
		WHERE schemaname = 'public' AND sequencename <> 'goose_db_version_id_seq'`)...)
	sort.Strings(out)
	return out
}

// lines runs query and prints each row in full, sorted.
func lines(t *testing.T, db *sql.DB, query string) []string {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer func() { _ = rows.Close() }()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(cols))
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			parts[i] = fmt.Sprintf("%s=%T:%v", cols[i], v, v)
		}
		out = append(out, strings.Join(parts, " "))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// contents is every row of every table but goose's, keyed by table, and
// the position of every sequence (ids must not be reused after a
// migration).
func contents(t *testing.T, db *sql.DB, cols map[string][]string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, l := range lines(t, db, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'goose_db_version'`) {
		table := strings.TrimPrefix(l, "tablename=string:")
		sel := "*"
		if c, ok := cols[table]; ok {
			sel = `"` + strings.Join(c, `", "`) + `"`
		}
		out[table] = lines(t, db, `SELECT `+sel+` FROM "`+table+`"`)
	}
	out["(sequences)"] = lines(t, db, `SELECT sequencename, last_value FROM pg_sequences
		WHERE schemaname = 'public' AND sequencename <> 'goose_db_version_id_seq'`)
	return out
}

// columns is each table's columns, in order: contents compares the
// previous release's columns only (the migrations since add some).
func columns(t *testing.T, db *sql.DB) map[string][]string {
	t.Helper()
	rows, err := db.Query(`SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	out := map[string][]string{}
	for rows.Next() {
		var table, col string
		if err := rows.Scan(&table, &col); err != nil {
			t.Fatal(err)
		}
		out[table] = append(out[table], col)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sinceRelease is the previous release's catalog with what the migrations
// since add (a catalog line each): 00002 the clinics' protocol ranges
// (a new table, empty in an old database: no clinic stated one yet), 00003
// the patient search indexes.
func sinceRelease(prev []string) []string {
	out := append(slices.Clone(prev), addedSinceRelease...)
	sort.Strings(out)
	return out
}

var addedSinceRelease = []string{
	"?column?=string:column table_name=string:clinic_protocols column_name=string:clinic_id ordinal_position=int64:1 data_type=string:bigint coalesce=int64:0 is_nullable=string:NO coalesce=string:",
	"?column?=string:column table_name=string:clinic_protocols column_name=string:protocol_max ordinal_position=int64:3 data_type=string:bigint coalesce=int64:0 is_nullable=string:NO coalesce=string:",
	"?column?=string:column table_name=string:clinic_protocols column_name=string:protocol_min ordinal_position=int64:2 data_type=string:bigint coalesce=int64:0 is_nullable=string:NO coalesce=string:",
	"?column?=string:constraint conrelid=string:clinic_protocols conname=string:clinic_protocols_pkey contype=string:p pg_get_constraintdef=string:PRIMARY KEY (clinic_id)",
	"?column?=string:index tablename=string:clinic_protocols indexname=string:clinic_protocols_pkey indexdef=string:CREATE UNIQUE INDEX clinic_protocols_pkey ON public.clinic_protocols USING btree (clinic_id)",
	`?column?=string:index tablename=string:patients indexname=string:patients_search_birth_date indexdef=string:CREATE INDEX patients_search_birth_date ON public.patients USING btree (clinic_id, birth_date COLLATE "C", id)`,
	`?column?=string:index tablename=string:patients indexname=string:patients_search_chart_no indexdef=string:CREATE INDEX patients_search_chart_no ON public.patients USING btree (clinic_id, lower((chart_no COLLATE "C")), id)`,
	`?column?=string:index tablename=string:patients indexname=string:patients_search_name indexdef=string:CREATE INDEX patients_search_name ON public.patients USING btree (clinic_id, lower((name COLLATE "C")), id)`,
}

func version(t *testing.T, db *sql.DB) (current, newest int64) {
	t.Helper()
	current, newest, err := schema.Version(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return current, newest
}

// versionRows checks db records each migration once.
func versionRows(t *testing.T, db *sql.DB) {
	t.Helper()
	var n, distinct int
	var top int64
	if err := db.QueryRow("SELECT COUNT(*), COUNT(DISTINCT version_id), MAX(version_id) FROM goose_db_version").Scan(&n, &distinct, &top); err != nil {
		t.Fatal(err)
	}
	if n != distinct {
		t.Errorf("goose_db_version has %d rows for %d versions, want one row each", n, distinct)
	}
	if _, newest := version(t, db); top != newest {
		t.Errorf("goose_db_version's newest version = %d, want %d", top, newest)
	}
}

// TestFreshIsPreviousRelease: a new database gets exactly the schema
// release edfbac7 made (same columns, types, defaults, index and
// constraint names), which is what lets a node of that release start on
// it during a rolling upgrade (see TestPreviousReleaseAutoMigrateChangesNothing).
func TestFreshIsPreviousRelease(t *testing.T) {
	t.Parallel()
	_, prev := open(t, testenv.PostgresDB(t))
	execFile(t, prev, "edfbac7-schema.sql")
	_, fresh := open(t, testenv.PostgresDB(t))
	if err := schema.Migrate(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	want, got := sinceRelease(catalog(t, prev)), catalog(t, fresh)
	if len(want) < 100 {
		t.Fatalf("the previous release's schema has %d entries, want the whole schema", len(want))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Migrate(fresh) schema differs from release edfbac7's:\n%s", diff(want, got))
	}
	versionRows(t, fresh)
}

// TestPreviousReleaseDatabase: a database release edfbac7 made and filled
// (no goose table yet) migrates without error, twice, and keeps every row
// of every table, and every sequence, as it was.
func TestPreviousReleaseDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, db := open(t, testenv.PostgresDB(t))
	execFile(t, db, "edfbac7-schema.sql")
	execFile(t, db, "edfbac7-rows.sql")
	wantSchema := sinceRelease(catalog(t, db))
	cols := columns(t, db)
	before := contents(t, db, cols)
	if len(before) < 20 {
		t.Fatalf("contents found %d tables in the previous release's database, want every table", len(before))
	}
	for table, rows := range before {
		if len(rows) == 0 {
			t.Fatalf("testdata leaves table %s empty: every table needs rows", table)
		}
	}
	for i := range 2 {
		if err := schema.Migrate(ctx, db); err != nil {
			t.Fatalf("Migrate #%d: %v", i+1, err)
		}
	}
	after := contents(t, db, cols)
	for table := range before {
		if !reflect.DeepEqual(after[table], before[table]) {
			t.Errorf("table %s changed by Migrate:\n%s", table, diff(before[table], after[table]))
		}
	}
	for table := range after {
		if _, ok := before[table]; !ok && len(after[table]) > 0 {
			t.Errorf("Migrate added table %s to a previous release's database with rows %q", table, after[table])
		}
	}
	if got := catalog(t, db); !reflect.DeepEqual(got, wantSchema) {
		t.Errorf("Migrate changed the previous release's schema otherwise than the migrations since say:\n%s", diff(wantSchema, got))
	}

	versionRows(t, db)
}

// TestConcurrentNodes: nodes starting together on one fresh database all
// succeed, and each migration is applied and recorded once.
func TestConcurrentNodes(t *testing.T) {
	t.Parallel()
	url := testenv.PostgresDB(t)
	const nodes = 6
	pools := make([]*sql.DB, nodes)
	for i := range pools {
		_, pools[i] = open(t, url)
	}
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for i, db := range pools {
		wg.Go(func() { errs[i] = schema.Migrate(context.Background(), db) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: Migrate = %v", i, err)
		}
	}
	versionRows(t, pools[0])
	if cur, newest := version(t, pools[0]); cur != newest {
		t.Errorf("Version = %d, want %d", cur, newest)
	}
}

// TestPreviousReleaseAutoMigrateChangesNothing: during a rolling upgrade a
// node of release edfbac7 starts on a database a new node migrated and runs
// its gorm AutoMigrate over its models. Those models are today's (a change
// to a model needs a migration, which this test then also checks): it must
// find nothing to change. audit's head table is unexported and left out.
func TestPreviousReleaseAutoMigrateChangesNothing(t *testing.T) {
	t.Parallel()
	gdb, db := open(t, testenv.PostgresDB(t))
	if err := schema.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	before := catalog(t, db)
	models := []any{&store.Clinic{}, &store.Enrollment{}, &store.Change{}, &store.Parked{}, &store.Outbox{}, &editing.Session{},
		&store.Row[records.Patient]{}, &store.Row[records.Doctor]{}, &store.Row[records.User]{}, &store.Row[records.ReportTemplate]{},
		&store.Row[records.Setting]{}, &store.Row[records.Study]{}, &store.Row[records.Image]{}, &store.Row[records.Capture]{},
		&store.Row[records.ProjectFile]{}, &store.Row[records.Report]{},
		&store.ClinicRetention{}, &store.RetentionEvent{}, &files.File{}, &auth.Session{}, &audit.Entry{}, &mfa.Factor{}, &backups.Row{},
		&store.ClinicProtocols{}}
	if len(models) != 14+len(records.Kinds) {
		t.Fatalf("the models list has %d models, want %d: a kind is missing", len(models), 14+len(records.Kinds))
	}
	if err := gdb.AutoMigrate(models...); err != nil {
		t.Fatalf("AutoMigrate on a migrated database: %v", err)
	}
	if after := catalog(t, db); !reflect.DeepEqual(after, before) {
		t.Errorf("gorm AutoMigrate changed a migrated database (a model and the migrations disagree):\n%s", diff(before, after))
	}
}

// diff lists the lines only in want (-) and only in got (+).
func diff(want, got []string) string {
	in := func(s []string) map[string]bool {
		m := map[string]bool{}
		for _, v := range s {
			m[v] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, v := range want {
		if !g[v] {
			b.WriteString("- " + v + "\n")
		}
	}
	for _, v := range got {
		if !w[v] {
			b.WriteString("+ " + v + "\n")
		}
	}
	return b.String()
}
