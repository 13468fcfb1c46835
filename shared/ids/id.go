package ids

import (
	"bytes"
	"database/sql/driver"
	"fmt"
	"strconv"
	"time"
)

// Bit layout; see the package documentation.
const (
	TimeBits = 41
	NodeBits = 14
	StepBits = 8

	MaxNode        = 1<<NodeBits - 1 // 16383
	MinClinicNode  = 1
	MaxClinicNode  = 12287
	MinCloudNode   = MaxClinicNode + 1 // 12288
	MaxCloudNode   = MaxNode
	nodeShift      = StepBits
	timeShift      = NodeBits + StepBits
	epochMillis    = 1704067200000 // 2024-01-01T00:00:00Z
	stepMask       = 1<<StepBits - 1
	nodeMask       = MaxNode << nodeShift
	maxIDsPerMilli = 1 << StepBits
)

// Epoch is the instant time bits count from.
var Epoch = time.UnixMilli(epochMillis).UTC()

// ID is a Snowflake id. In JSON it is a string, because JavaScript numbers
// lose precision above 2^53; it accepts a number on input too.
type ID int64

// String returns the decimal form.
func (id ID) String() string { return strconv.FormatInt(int64(id), 10) }

// Node returns the node that minted id.
func (id ID) Node() int64 { return (int64(id) & nodeMask) >> nodeShift }

// Time returns when id was minted, to the millisecond.
func (id ID) Time() time.Time {
	return time.UnixMilli(int64(id)>>timeShift + epochMillis).UTC()
}

// Parse reads a decimal id.
func Parse(s string) (ID, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%w: %q", ErrSyntax, s)
	}
	return ID(v), nil
}

// MarshalJSON writes the id as a JSON string.
func (id ID) MarshalJSON() ([]byte, error) {
	return []byte(`"` + id.String() + `"`), nil
}

// UnmarshalJSON accepts "123" or 123.
func (id *ID) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Value stores the id as a BIGINT.
func (id ID) Value() (driver.Value, error) { return int64(id), nil }

// Scan reads a BIGINT (or its text form).
func (id *ID) Scan(src any) error {
	switch v := src.(type) {
	case int64:
		*id = ID(v)
	case []byte:
		p, err := Parse(string(v))
		if err != nil {
			return err
		}
		*id = p
	case string:
		p, err := Parse(v)
		if err != nil {
			return err
		}
		*id = p
	case nil:
		*id = 0
	default:
		return fmt.Errorf("%w: cannot scan %T", ErrSyntax, src)
	}
	return nil
}

// ValidClinicNode reports whether n is in the clinic node range.
func ValidClinicNode(n int64) bool { return n >= MinClinicNode && n <= MaxClinicNode }

// ValidCloudNode reports whether n is in the cloud node range.
func ValidCloudNode(n int64) bool { return n >= MinCloudNode && n <= MaxCloudNode }
