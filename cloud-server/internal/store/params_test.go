package store

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// checkParams fails unless encodeParams gives args, for parameters of the
// types oids, exactly the values and formats pgx's own builder gives (what
// commitWith sent before it): the same bytes, NULL where pgx sends NULL.
func checkParams(t testing.TB, oids []uint32, args []any) {
	t.Helper()
	m := pgtype.NewMap()
	var eqb pgx.ExtendedQueryBuilder
	wantErr := eqb.Build(m, &pgconn.StatementDescription{ParamOIDs: oids}, args)
	vals, formats, err := encodeParams(m, oids, args)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("encodeParams(%v) error %v, pgx's %v", args, err, wantErr)
	}
	if err != nil {
		return
	}
	if len(vals) != len(eqb.ParamValues) || len(formats) != len(eqb.ParamFormats) {
		t.Fatalf("encodeParams(%v) = %d values, %d formats; pgx %d, %d", args, len(vals), len(formats), len(eqb.ParamValues), len(eqb.ParamFormats))
	}
	for i := range vals {
		want := eqb.ParamValues[i]
		if formats[i] != eqb.ParamFormats[i] || !bytes.Equal(vals[i], want) || (vals[i] == nil) != (want == nil) {
			t.Fatalf("encodeParams: args[%d] (%T %v) = format %d %x (nil %v); pgx: format %d %x (nil %v)",
				i, args[i], args[i], formats[i], vals[i], vals[i] == nil, eqb.ParamFormats[i], want, want == nil)
		}
	}
}

// TestEncodeParamsAsPgx: every kind of argument the writes pass (arrays
// of bigint, boolean, text, timestamptz, with and without NULLs, a
// bigint), at the edges (empty, nil, one element, the extreme values,
// times before 1970 and 2000 and in other zones, text that is not UTF-8
// or holds NUL), and arguments encodeParams leaves to pgx, alone and
// among the others: the values and formats are pgx's, byte for byte.
func TestEncodeParamsAsPgx(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		berlin = time.FixedZone("CET", 3600)
	}
	times := []time.Time{
		{},
		time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(1969, 7, 20, 20, 17, 40, 123456789, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(2026, 12, 7, 6, 50, 0, 1500, berlin),
		time.Date(2026, 3, 29, 2, 30, 0, 999, time.FixedZone("x", -12*3600-1800)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC),
		time.Date(200000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(), // with a monotonic reading
	}
	texts := []string{"", "a", `Kim "the" Lee`, `back\slash`, "{a,b}", "NULL", "Zoë 金", "\x00nul", "\xff\xfe not UTF-8",
		strings.Repeat("Lorem ipsum ", 200)}
	nullTexts := func(valid ...bool) pgtype.FlatArray[pgtype.Text] {
		out := make(pgtype.FlatArray[pgtype.Text], len(valid))
		for i, v := range valid {
			out[i] = pgtype.Text{String: texts[i%len(texts)], Valid: v}
		}
		return out
	}
	nullTimes := func(valid ...bool) pgtype.FlatArray[pgtype.Timestamptz] {
		out := make(pgtype.FlatArray[pgtype.Timestamptz], len(valid))
		for i, v := range valid {
			out[i] = pgtype.Timestamptz{Time: times[i%len(times)], Valid: v}
		}
		return out
	}
	const (
		i8   = pgtype.Int8OID
		i8s  = pgtype.Int8ArrayOID
		bs   = pgtype.BoolArrayOID
		txts = pgtype.TextArrayOID
		tss  = pgtype.TimestamptzArrayOID
	)
	for _, c := range []struct {
		name string
		oids []uint32
		args []any
		pgx  bool // encodeParams hands these to pgx
	}{
		{"bigint", []uint32{i8}, []any{int64(42)}, false},
		{"bigint extremes", []uint32{i8, i8, i8}, []any{int64(math.MinInt64), int64(math.MaxInt64), int64(-1)}, false},
		{"bigint[]", []uint32{i8s}, []any{[]int64{1, -1, 0, math.MaxInt64, math.MinInt64}}, false},
		{"bigint[] of one", []uint32{i8s}, []any{[]int64{7}}, false},
		{"empty bigint[]", []uint32{i8s}, []any{[]int64{}}, true},
		{"nil bigint[]", []uint32{i8s}, []any{[]int64(nil)}, true},
		{"boolean[]", []uint32{bs}, []any{[]bool{true, false, false, true}}, false},
		{"text[]", []uint32{txts}, []any{texts}, false},
		{"text[] of empty strings", []uint32{txts}, []any{[]string{"", ""}}, false},
		{"empty text[]", []uint32{txts}, []any{[]string{}}, true},
		{"timestamptz[]", []uint32{tss}, []any{times}, false},
		{"text[] without NULLs", []uint32{txts}, []any{nullTexts(true, true, true)}, false},
		{"text[] with NULLs", []uint32{txts}, []any{nullTexts(true, false, true, false)}, false},
		{"text[] of NULLs", []uint32{txts}, []any{nullTexts(false, false)}, false},
		{"text[] NULL first", []uint32{txts}, []any{nullTexts(false, true)}, false},
		{"timestamptz[] with NULLs", []uint32{tss}, []any{nullTimes(true, false, true, true, true, true, true, true, true, false)}, false},
		{"timestamptz[] without NULLs", []uint32{tss}, []any{nullTimes(true, true)}, false},
		{"timestamptz[] with infinity", []uint32{tss}, []any{pgtype.FlatArray[pgtype.Timestamptz]{{InfinityModifier: pgtype.Infinity, Valid: true}, {Time: times[1], Valid: true}}}, true},
		{"an accept's changes", []uint32{i8s, i8s, txts, bs, txts, tss, i8s, i8},
			[]any{[]int64{1, 2}, []int64{3, 4}, []string{"patient", "study"}, []bool{false, true}, nullTexts(true, false), []time.Time{times[5], times[9]}, []int64{5, 6}, int64(9)}, false},
		{"a string (text, pgx's)", []uint32{pgtype.TextOID}, []any{"x"}, true},
		{"a string among arrays", []uint32{i8s, pgtype.TextOID, txts}, []any{[]int64{1}, "x", []string{"y"}}, true},
		{"an int32[] (pgx's)", []uint32{pgtype.Int4ArrayOID, i8s}, []any{[]int32{1, 2}, []int64{3}}, true},
		{"bigint for an int4", []uint32{pgtype.Int4OID}, []any{int64(3)}, true},
		{"bigint[] for a text[]", []uint32{txts}, []any{[]int64{3}}, true},
		{"a nil", []uint32{i8s, i8}, []any{[]int64{1}, nil}, true},
		{"too few arguments", []uint32{i8s, i8}, []any{[]int64{1}}, true},
		{"too many arguments", []uint32{i8s}, []any{[]int64{1}, int64(2)}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkParams(t, c.oids, c.args)
			own := len(c.oids) == len(c.args)
			for i := range c.args {
				if _, ok := paramSize(c.oids[min(i, len(c.oids)-1)], c.args[i]); !ok {
					own = false
				}
			}
			if own == c.pgx {
				t.Errorf("encodeParams encodes %v itself: %v, want %v", c.args, own, !c.pgx)
			}
		})
	}
}

// FuzzEncodeParams holds encodeParams to pgx for fuzzed arrays of every
// kind it encodes itself.
func FuzzEncodeParams(f *testing.F) {
	f.Add("a,b,,Zoë", int64(1), int64(0), uint64(0b1011), int64(1700000000), int64(123456789), true)
	f.Add("", int64(math.MinInt64), int64(-1), uint64(0), int64(-62135596800), int64(0), false)
	f.Add("\x00,\xff", int64(math.MaxInt64), int64(7), uint64(math.MaxUint64), int64(253402300799), int64(999999999), true)
	f.Fuzz(func(t *testing.T, csv string, a, b int64, nulls uint64, sec, nsec int64, flag bool) {
		strs := strings.Split(csv, ",")
		if len(strs) > 64 {
			strs = strs[:64]
		}
		tm := time.Unix(sec%(1<<40), nsec%1_000_000_000).In(time.FixedZone("z", int(a%86400)))
		ts := []time.Time{tm, tm.Add(time.Duration(b)), time.Unix(b%(1<<40), 0)}
		flat := make(pgtype.FlatArray[pgtype.Text], len(strs))
		for i, s := range strs {
			flat[i] = pgtype.Text{String: s, Valid: nulls&(1<<i) == 0}
		}
		flatTimes := make(pgtype.FlatArray[pgtype.Timestamptz], len(ts))
		for i, x := range ts {
			flatTimes[i] = pgtype.Timestamptz{Time: x, Valid: nulls&(1<<(i+32)) == 0}
		}
		checkParams(t,
			[]uint32{pgtype.TextArrayOID, pgtype.TextArrayOID, pgtype.Int8ArrayOID, pgtype.BoolArrayOID, pgtype.TimestamptzArrayOID, pgtype.TimestamptzArrayOID, pgtype.Int8OID},
			[]any{strs, flat, []int64{a, b, sec, nsec}, []bool{flag, !flag, nulls&1 == 1}, ts, flatTimes, a})
	})
}

// BenchmarkEncodeParams: an accept's write statement for 100 changes of 1
// KB patients (about what sc-cloud commits under the replication
// benchmark), its arguments encoded by pgx's builder or by encodeParams.
func BenchmarkEncodeParams(b *testing.B) {
	const n = 100
	notes := strings.Repeat("Lorem ipsum dolor sit amet, \"consectetur\" adipiscing elit. ", 16)
	var oids []uint32
	var args []any
	ints := func() []int64 {
		v := make([]int64, n)
		for i := range v {
			v[i] = int64(i) << 20
		}
		return v
	}
	strs := func(s string) []string {
		v := make([]string, n)
		for i := range v {
			v[i] = fmt.Sprint(s, i)
		}
		return v
	}
	now := time.Now()
	add := func(oid uint32, a any) { oids, args = append(oids, oid), append(args, a) }
	for range 7 { // the changes' bigints
		add(pgtype.Int8ArrayOID, ints())
	}
	for _, s := range []string{"patient", "local", "1.0", "1.1", "", "", "dr.kim", `{"chart_no":"C1","name":"Patient","notes":"` + notes + `"}`} {
		add(pgtype.TextArrayOID, strs(s))
	}
	for range 2 {
		ts := make([]time.Time, n)
		for i := range ts {
			ts[i] = now
		}
		add(pgtype.TimestamptzArrayOID, ts)
		add(pgtype.BoolArrayOID, make([]bool, n))
	}
	for range 3 { // the record's ids and versions
		add(pgtype.Int8ArrayOID, ints())
	}
	for _, s := range []string{"C", "Patient ", "1970-01-01", "", "+1 555 0100", notes} { // its fields
		flat := make(pgtype.FlatArray[pgtype.Text], n)
		for i := range flat {
			flat[i] = pgtype.Text{String: fmt.Sprint(s, i), Valid: true}
		}
		add(pgtype.TextArrayOID, flat)
	}
	add(pgtype.Int8ArrayOID, ints()) // the outbox rows
	add(pgtype.Int8ArrayOID, ints())
	m := pgtype.NewMap()
	b.Run("pgx", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, _, err := pgxParams(m, oids, args); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encodeParams", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, _, err := encodeParams(m, oids, args); err != nil {
				b.Fatal(err)
			}
		}
	})
}
