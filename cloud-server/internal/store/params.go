package store

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// An accept transaction's writes go as one statement whose parameters are
// arrays of a column each (insertChanges, insertOutbox, rowsInsert): for
// 100 changes of 1 KB records, about 250 KB of parameters. pgx encodes an
// array element by element into a buffer it starts at 256 bytes for each
// statement, so the buffer grew about 30 times per transaction (by a
// quarter at a time past 256 elements), each time a new block zeroed and
// the bytes so far copied, every element boxed on the way: 10% of
// sc-cloud's CPU under the replication benchmark, and a quarter of what an
// accept allocated. encodeParams writes the same bytes into one buffer of the
// size they need.

// encodeParams is what pgx (ExtendedQueryBuilder.Build) makes of args for
// parameters of the types oids (a prepared statement's): each value and
// its format, byte for byte the same. The arrays and integers the writes
// of this package pass are encoded here; anything else hands all of args
// to pgx itself.
func encodeParams(m *pgtype.Map, oids []uint32, args []any) ([][]byte, []int16, error) {
	size := 0
	for i, a := range args {
		if i >= len(oids) {
			break
		}
		n, ok := paramSize(oids[i], a)
		if !ok || size > math.MaxInt32-n {
			return pgxParams(m, oids, args)
		}
		size += n
	}
	if len(oids) != len(args) {
		return pgxParams(m, oids, args)
	}
	buf := make([]byte, 0, size)
	vals := make([][]byte, len(args))
	formats := make([]int16, len(args))
	for i, a := range args {
		start := len(buf)
		buf = appendParam(buf, a)
		vals[i] = buf[start:len(buf):len(buf)]
		formats[i] = pgtype.BinaryFormatCode
	}
	return vals, formats, nil
}

// pgxParams is encodeParams done by pgx.
func pgxParams(m *pgtype.Map, oids []uint32, args []any) ([][]byte, []int16, error) {
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(m, &pgconn.StatementDescription{ParamOIDs: oids}, args); err != nil {
		return nil, nil, err
	}
	return eqb.ParamValues, eqb.ParamFormats, nil
}

// Sizes in PostgreSQL's binary formats: a one-dimensional array's header
// (dimensions, has-nulls, element type, length, lower bound), an element's
// length prefix, an int8's and a timestamptz's value (microseconds since
// 2000-01-01 UTC).
const (
	arrayHeaderSize = 5 * 4
	elemPrefix      = 4
	int8Size        = 8
	tsSize          = 8
	// microsY2K is 2000-01-01 00:00 UTC in microseconds since 1970.
	microsY2K = 946684800 * 1000000
)

// paramSize is the size of a's encoding for a parameter of type oid, and
// whether it is one encodeParams writes itself: a value pgx sends in the
// binary format that this function knows byte for byte. An empty or nil
// array is left to pgx (it has no elements to save on), as is a
// timestamp of infinity.
func paramSize(oid uint32, a any) (int, bool) {
	n := 0
	switch v := a.(type) {
	case int64:
		return int8Size, oid == pgtype.Int8OID
	case []int64:
		if oid != pgtype.Int8ArrayOID || len(v) == 0 {
			return 0, false
		}
		n = len(v) * (elemPrefix + int8Size)
	case []bool:
		if oid != pgtype.BoolArrayOID || len(v) == 0 {
			return 0, false
		}
		n = len(v) * (elemPrefix + 1)
	case []time.Time:
		if oid != pgtype.TimestamptzArrayOID || len(v) == 0 {
			return 0, false
		}
		n = len(v) * (elemPrefix + tsSize)
	case []string:
		if oid != pgtype.TextArrayOID || len(v) == 0 {
			return 0, false
		}
		for _, s := range v {
			if len(s) > math.MaxInt32-elemPrefix-n {
				return 0, false
			}
			n += elemPrefix + len(s)
		}
	case pgtype.FlatArray[pgtype.Text]:
		if oid != pgtype.TextArrayOID || len(v) == 0 {
			return 0, false
		}
		for _, s := range v {
			if len(s.String) > math.MaxInt32-elemPrefix-n {
				return 0, false
			}
			n += elemPrefix
			if s.Valid {
				n += len(s.String)
			}
		}
	case pgtype.FlatArray[pgtype.Timestamptz]:
		if oid != pgtype.TimestamptzArrayOID || len(v) == 0 {
			return 0, false
		}
		for _, t := range v {
			if t.InfinityModifier != pgtype.Finite {
				return 0, false
			}
			n += elemPrefix
			if t.Valid {
				n += tsSize
			}
		}
	default:
		return 0, false
	}
	if n > math.MaxInt32-arrayHeaderSize {
		return 0, false
	}
	return arrayHeaderSize + n, true
}

// appendParam appends a's binary encoding (a value paramSize took).
func appendParam(buf []byte, a any) []byte {
	switch v := a.(type) {
	case int64:
		return binary.BigEndian.AppendUint64(buf, uint64(v))
	case []int64:
		buf = appendArrayHeader(buf, pgtype.Int8OID, len(v), false)
		for _, x := range v {
			buf = binary.BigEndian.AppendUint32(buf, int8Size)
			buf = binary.BigEndian.AppendUint64(buf, uint64(x))
		}
	case []bool:
		buf = appendArrayHeader(buf, pgtype.BoolOID, len(v), false)
		for _, x := range v {
			buf = binary.BigEndian.AppendUint32(buf, 1)
			if x {
				buf = append(buf, 1)
			} else {
				buf = append(buf, 0)
			}
		}
	case []time.Time:
		buf = appendArrayHeader(buf, pgtype.TimestamptzOID, len(v), false)
		for _, t := range v {
			buf = binary.BigEndian.AppendUint32(buf, tsSize)
			buf = binary.BigEndian.AppendUint64(buf, uint64(microsSinceY2K(t)))
		}
	case []string:
		buf = appendArrayHeader(buf, pgtype.TextOID, len(v), false)
		for _, s := range v {
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
			buf = append(buf, s...)
		}
	case pgtype.FlatArray[pgtype.Text]:
		buf = appendArrayHeader(buf, pgtype.TextOID, len(v), hasNull(v, func(s pgtype.Text) bool { return s.Valid }))
		for _, s := range v {
			if !s.Valid {
				buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32) // -1: NULL
				continue
			}
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(s.String)))
			buf = append(buf, s.String...)
		}
	case pgtype.FlatArray[pgtype.Timestamptz]:
		buf = appendArrayHeader(buf, pgtype.TimestamptzOID, len(v), hasNull(v, func(t pgtype.Timestamptz) bool { return t.Valid }))
		for _, t := range v {
			if !t.Valid {
				buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32)
				continue
			}
			buf = binary.BigEndian.AppendUint32(buf, tsSize)
			buf = binary.BigEndian.AppendUint64(buf, uint64(microsSinceY2K(t.Time)))
		}
	}
	return buf
}

// appendArrayHeader appends the header of a one-dimensional array of n
// elements of type elem, numbered from 1.
func appendArrayHeader(buf []byte, elem uint32, n int, null bool) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 1)
	if null {
		buf = binary.BigEndian.AppendUint32(buf, 1)
	} else {
		buf = binary.BigEndian.AppendUint32(buf, 0)
	}
	buf = binary.BigEndian.AppendUint32(buf, elem)
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	return binary.BigEndian.AppendUint32(buf, 1)
}

func hasNull[T any](v []T, valid func(T) bool) bool {
	for _, x := range v {
		if !valid(x) {
			return true
		}
	}
	return false
}

// microsSinceY2K is t as a timestamptz's binary value, computed as pgx
// computes it.
func microsSinceY2K(t time.Time) int64 {
	return t.Unix()*1000000 + int64(t.Nanosecond())/1000 - microsY2K
}
