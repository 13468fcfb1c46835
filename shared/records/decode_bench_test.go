package records

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
	"github.com/scsync/scsync/shared/wire"
)

// BenchmarkDecodeUp is the cloud's reading of an up message of the
// replication benchmark's size (60 changes of 1 KB patients, as its
// clients write them, gzipped): wire.Decode, then each change's content as the
// consumer decodes it (Decode), and the same with the content read by
// encoding/json alone (strict), as Decode did before DecodeFlat.
func BenchmarkDecodeUp(b *testing.B) {
	batch := wire.NewBatch(42)
	for i := range 60 {
		p := Patient{ChartNo: fmt.Sprintf("C-%07d", i), Name: fmt.Sprintf("Patient %d", i), BirthDate: "1980-05-17",
			Sex: "F", Phone: "010-1234-5678", Notes: strings.Repeat("x", 900)}
		payload, err := json.Marshal(p)
		if err != nil {
			b.Fatal(err)
		}
		batch.Changes = append(batch.Changes, wire.Envelope{Protocol: wire.Protocol, Type: wire.TypeChange, Clinic: 42,
			Origin: wire.OriginLocal, ChangeID: ids.ID(1000 + i), Kind: wire.KindPatient, RecordID: ids.ID(2000 + i),
			NewVersion: version.First, At: time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC), Payload: payload})
	}
	body, enc, err := wire.Encode(batch)
	if err != nil {
		b.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		decode func(wire.Kind, []byte) (Content, error)
	}{
		{"strict", decodeStrict},
		{"Decode", Decode},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				got, err := wire.Decode(body, enc)
				if err != nil {
					b.Fatal(err)
				}
				for _, e := range got.Changes {
					if _, err := tt.decode(e.Kind, e.Payload); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
