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
	"testing"

	"github.com/libtnb/sqlite"
	"github.com/pressly/goose/v3"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/scsync/scsync/local-server/internal/schema"
)

// open opens a new SQLite database in the test's directory, with the
// pragmas sc-local's store uses.
func open(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clinic.db")
	db, err := gorm.Open(sqlite.Open("file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)"),
		&gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = sqlDB.Close() })
	return sqlDB
}

// execFile runs the statements of a testdata file (one per line or block,
// each ending with ";" at the end of a line).
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

// catalog is db's schema as SQLite keeps it, goose's own table left out:
// one line per table and index, with the statement that made it.
func catalog(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query("SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master " +
		"WHERE tbl_name NOT IN ('goose_db_version', 'sqlite_sequence') ORDER BY type, name")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var typ, name, tbl, stmt string
		if err := rows.Scan(&typ, &name, &tbl, &stmt); err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.Join([]string{typ, name, tbl, stmt}, " | "))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// contents is every row of every table but goose's, each row printed in
// full, keyed by table; sqlite_sequence (the AUTOINCREMENT counters) is
// kept: ids must not be reused after a migration.
func contents(t *testing.T, db *sql.DB) map[string][]string {
	t.Helper()
	var tables []string
	for _, l := range dump(t, db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'goose_db_version'") {
		tables = append(tables, strings.TrimPrefix(l, "name=string:"))
	}
	out := map[string][]string{}
	for _, table := range tables {
		q := "SELECT * FROM `" + table + "`"
		if table == "sqlite_sequence" {
			q += " WHERE name <> 'goose_db_version'"
		}
		out[table] = dump(t, db, q)
	}
	return out
}

func dump(t *testing.T, db *sql.DB, query string) []string {
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

func version(t *testing.T, db *sql.DB) (current, newest int64) {
	t.Helper()
	current, newest, err := schema.Version(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return current, newest
}

// TestFreshIsPreviousRelease: a new database gets exactly the schema
// release edfbac7 made (same tables, columns, types, defaults, index names
// and statements) with the migrations since, so that release's gorm
// AutoMigrate finds nothing to change if it is started on it again (a
// rollback) but the index 00003 dropped, which it builds again.
func TestFreshIsPreviousRelease(t *testing.T) {
	t.Parallel()
	prev := open(t)
	execFile(t, prev, "edfbac7-schema.sql")
	fresh := open(t)
	if err := schema.Migrate(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	want, got := sinceRelease(catalog(t, prev)), catalog(t, fresh)
	if len(want) < 20 {
		t.Fatalf("the previous release's schema has %d entries, want the whole schema", len(want))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Migrate(fresh) schema differs from release edfbac7's with the migrations since:\n%s", diff(want, got))
	}
	if cur, newest := version(t, fresh); cur != newest || cur < 1 {
		t.Errorf("Version after Migrate = %d (newest %d), want the newest", cur, newest)
	}
}

// TestPreviousReleaseDatabase: a database release edfbac7 made and filled
// (no goose table yet) migrates without error, twice, and keeps every row
// of every table as it was.
func TestPreviousReleaseDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)
	execFile(t, db, "edfbac7-schema.sql")
	execFile(t, db, "edfbac7-rows.sql")
	wantSchema := sinceRelease(catalog(t, db))
	before := contents(t, db)
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
	after := contents(t, db)
	if !reflect.DeepEqual(after, before) {
		for table := range before {
			if !reflect.DeepEqual(after[table], before[table]) {
				t.Errorf("table %s changed by Migrate:\n%s", table, diff(before[table], after[table]))
			}
		}
		for table := range after {
			if _, ok := before[table]; !ok {
				t.Errorf("Migrate added table %s to a previous release's database with rows %q", table, after[table])
			}
		}
	}
	if got := catalog(t, db); !reflect.DeepEqual(got, wantSchema) {
		t.Errorf("Migrate changed the previous release's schema otherwise than the migrations since say:\n%s", diff(wantSchema, got))
	}
	if cur, newest := version(t, db); cur != newest {
		t.Errorf("Version after Migrate = %d, want %d", cur, newest)
	}
	// Each migration is recorded once, however often Migrate ran.
	var n, distinct int
	if err := db.QueryRow("SELECT COUNT(*), COUNT(DISTINCT version_id) FROM goose_db_version").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != distinct {
		t.Errorf("goose_db_version has %d rows for %d versions, want one each", n, distinct)
	}
}

// sinceRelease is the previous release's catalog with what the migrations
// since add (a catalog line each: 00002 the patient search indexes, 00004
// the partial sync_state indexes) and without what they drop (00003 the
// audit log's index on its time, 00004 the full sync_state indexes).
func sinceRelease(prev []string) []string {
	out := slices.DeleteFunc(slices.Clone(prev), func(l string) bool { return slices.Contains(droppedSinceRelease, l) })
	if len(out) != len(prev)-len(droppedSinceRelease) {
		panic("the previous release's catalog lacks a line droppedSinceRelease names")
	}
	out = append(out, addedSinceRelease...)
	sort.Strings(out)
	return out
}

var addedSinceRelease = []string{
	"index | patients_search_birth_date | patients | CREATE INDEX patients_search_birth_date ON patients (birth_date, id)",
	"index | patients_search_chart_no | patients | CREATE INDEX patients_search_chart_no ON patients (lower(chart_no), id)",
	"index | patients_search_name | patients | CREATE INDEX patients_search_name ON patients (lower(name), id)",
	"index | idx_patients_sync_state | patients | CREATE INDEX idx_patients_sync_state ON patients (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
	"index | idx_doctors_sync_state | doctors | CREATE INDEX idx_doctors_sync_state ON doctors (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
	"index | idx_users_sync_state | users | CREATE INDEX idx_users_sync_state ON users (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
	"index | idx_report_templates_sync_state | report_templates | CREATE INDEX idx_report_templates_sync_state ON report_templates (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
	"index | idx_settings_sync_state | settings | CREATE INDEX idx_settings_sync_state ON settings (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
	"index | idx_studies_sync_state | studies | CREATE INDEX idx_studies_sync_state ON studies (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
	"index | idx_images_sync_state | images | CREATE INDEX idx_images_sync_state ON images (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
	"index | idx_captures_sync_state | captures | CREATE INDEX idx_captures_sync_state ON captures (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
	"index | idx_project_files_sync_state | project_files | CREATE INDEX idx_project_files_sync_state ON project_files (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
	"index | idx_reports_sync_state | reports | CREATE INDEX idx_reports_sync_state ON reports (sync_state) WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1)",
}

var droppedSinceRelease = []string{
	"index | idx_audit_log_at | audit_log | CREATE INDEX `idx_audit_log_at` ON `audit_log`(`at`)",
	"index | idx_patients_sync_state | patients | CREATE INDEX `idx_patients_sync_state` ON `patients`(`sync_state`)",
	"index | idx_doctors_sync_state | doctors | CREATE INDEX `idx_doctors_sync_state` ON `doctors`(`sync_state`)",
	"index | idx_users_sync_state | users | CREATE INDEX `idx_users_sync_state` ON `users`(`sync_state`)",
	"index | idx_report_templates_sync_state | report_templates | CREATE INDEX `idx_report_templates_sync_state` ON `report_templates`(`sync_state`)",
	"index | idx_settings_sync_state | settings | CREATE INDEX `idx_settings_sync_state` ON `settings`(`sync_state`)",
	"index | idx_studies_sync_state | studies | CREATE INDEX `idx_studies_sync_state` ON `studies`(`sync_state`)",
	"index | idx_images_sync_state | images | CREATE INDEX `idx_images_sync_state` ON `images`(`sync_state`)",
	"index | idx_captures_sync_state | captures | CREATE INDEX `idx_captures_sync_state` ON `captures`(`sync_state`)",
	"index | idx_project_files_sync_state | project_files | CREATE INDEX `idx_project_files_sync_state` ON `project_files`(`sync_state`)",
	"index | idx_reports_sync_state | reports | CREATE INDEX `idx_reports_sync_state` ON `reports`(`sync_state`)",
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

// TestSyncStateIndexPartial: 00004 on a database at 00003 with records in
// every state, queued or not, keeps every row, and leaves each kind's
// sync_state index holding the pending and conflict records and the
// excluded ones once queued, only; its Down brings the full index back.
func TestSyncStateIndexPartial(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t)
	p, err := goose.NewProvider(goose.DialectSQLite3, db, schema.Migrations(), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 3); err != nil {
		t.Fatal(err)
	}
	states := []string{"pending", "synced", "conflict", "excluded"}
	for i, table := range kindTables {
		for j := range 40 {
			if _, err := db.Exec("INSERT INTO "+table+" (id, clinic_id, version, origin, sync_state, queued) VALUES (?, 7, 'v', 'local', ?, ?)",
				1000*i+j+1, states[j%len(states)], j/len(states)%2); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := contents(t, db)
	if err := schema.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if after := contents(t, db); !reflect.DeepEqual(after, before) {
		t.Errorf("Migrate changed rows:\n%s", diff(flat(before), flat(after)))
	}
	for _, table := range kindTables {
		index := "idx_" + table + "_sync_state"
		got := dump(t, db, "SELECT sync_state, COUNT(*) AS n FROM "+table+" INDEXED BY "+index+
			" WHERE sync_state = 'pending' OR sync_state = 'conflict' OR (sync_state = 'excluded' AND queued = 1) GROUP BY sync_state")
		if want := []string{"sync_state=string:conflict n=int64:10", "sync_state=string:excluded n=int64:5", "sync_state=string:pending n=int64:10"}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s holds %q, want %q", index, got, want)
		}
		// Its b-tree's cells (an index keeps an entry in every cell,
		// interior ones included): those 25 records.
		var entries int
		if err := db.QueryRow("SELECT SUM(ncell) FROM dbstat WHERE name = ?", index).Scan(&entries); err != nil || entries != 25 {
			t.Errorf("%s holds %d entries (%v), want 25", index, entries, err)
		}
		var partial int
		if err := db.QueryRow("SELECT partial FROM pragma_index_list(?) WHERE name = ?", table, index).Scan(&partial); err != nil || partial != 1 {
			t.Errorf("%s partial = %d (%v), want 1", index, partial, err)
		}
	}
	if _, err := p.DownTo(ctx, 3); err != nil {
		t.Fatal(err)
	}
	for _, table := range kindTables {
		var partial int
		if err := db.QueryRow("SELECT partial FROM pragma_index_list(?) WHERE name = ?", table, "idx_"+table+"_sync_state").Scan(&partial); err != nil || partial != 0 {
			t.Errorf("after Down, idx_%s_sync_state partial = %d (%v), want a full index", table, partial, err)
		}
	}
	if after := contents(t, db); !reflect.DeepEqual(after, before) {
		t.Errorf("Down changed rows:\n%s", diff(flat(before), flat(after)))
	}
}

// kindTables are the tables of the record kinds.
var kindTables = []string{"patients", "doctors", "users", "report_templates", "settings", "studies", "images", "captures", "project_files", "reports"}

// flat is contents as one list, each row prefixed with its table.
func flat(c map[string][]string) []string {
	var out []string
	for table, rows := range c {
		for _, r := range rows {
			out = append(out, table+": "+r)
		}
	}
	sort.Strings(out)
	return out
}
