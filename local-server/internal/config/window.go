package config

import (
	"fmt"
	"strings"
	"time"
)

// Window is a daily time window in local time, such as 22:00-06:00 (it may
// cross midnight): when backfill files may use the clinic's uplink.
type Window struct {
	From, To time.Duration // since midnight
	text     string
}

// ParseWindow reads "HH:MM-HH:MM"; "" is no window (nil, any time).
func ParseWindow(s string) (*Window, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return nil, fmt.Errorf("window %q: want HH:MM-HH:MM, e.g. 22:00-06:00", s)
	}
	from, err := clock(a)
	if err != nil {
		return nil, fmt.Errorf("window %q: %w", s, err)
	}
	to, err := clock(b)
	if err != nil {
		return nil, fmt.Errorf("window %q: %w", s, err)
	}
	if from == to {
		return nil, fmt.Errorf("window %q is empty; leave it unset for any time", s)
	}
	return &Window{From: from, To: to, text: s}, nil
}

func clock(s string) (time.Duration, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

func (w *Window) String() string { return w.text }

// Until is how long from now until the window opens (0 inside it).
func (w *Window) Until(now time.Time) time.Duration {
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, now.Location())
	at := now.Sub(midnight)
	inside := false
	if w.From < w.To {
		inside = at >= w.From && at < w.To
	} else {
		inside = at >= w.From || at < w.To
	}
	if inside {
		return 0
	}
	if at < w.From {
		return w.From - at
	}
	return 24*time.Hour - at + w.From
}
