package syncer

import (
	"context"
	"errors"
	"testing"

	"github.com/scsync/scsync/shared/wire"
)

type rangedPuller struct {
	p     wire.Range
	known bool
}

func (rangedPuller) Changes(context.Context, int64, int) (wire.ChangesPage, error) {
	return wire.ChangesPage{}, nil
}

func (r rangedPuller) CloudProtocols() (wire.Range, bool) { return r.p, r.known }

// TestUpProtocol: the relay sends in the newest version this build and the
// cloud speak; before the cloud stated a range (or when it states none, a
// cloud before ranges) in the legacy version; with nothing in common it
// refuses to send.
func TestUpProtocol(t *testing.T) {
	tests := []struct {
		name string
		pull Puller
		want int
		err  bool
	}{
		{"not known yet", rangedPuller{}, wire.LegacyProtocol, false},
		{"a cloud before ranges", rangedPuller{wire.Legacy(), true}, wire.LegacyProtocol, false},
		{"a newer cloud", rangedPuller{wire.Range{Min: 2, Max: 9}, true}, wire.MaxProtocol(), false},
		{"a cloud that dropped us", rangedPuller{wire.Range{Min: 9, Max: 9}, true}, 0, true},
	}
	for _, tt := range tests {
		s := &Syncer{pull: tt.pull}
		got, err := s.upProtocol()
		if got != tt.want || (err != nil) != tt.err || (err != nil && !errors.Is(err, wire.ErrProtocol)) {
			t.Errorf("%s: upProtocol() = %d, %v; want %d, error %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}
