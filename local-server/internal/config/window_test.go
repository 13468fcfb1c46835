package config

import (
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	day := func(h, m int) time.Time { return time.Date(2026, 11, 23, h, m, 0, 0, time.Local) }
	night, err := ParseWindow("22:00-06:00")
	if err != nil {
		t.Fatal(err)
	}
	office, err := ParseWindow("12:30-13:30")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		w    *Window
		now  time.Time
		want time.Duration
	}{
		{night, day(23, 0), 0},
		{night, day(2, 0), 0},
		{night, day(5, 59), 0},
		{night, day(6, 0), 16 * time.Hour},
		{night, day(21, 30), 30 * time.Minute},
		{office, day(12, 30), 0},
		{office, day(13, 30), 23 * time.Hour},
		{office, day(9, 0), 3*time.Hour + 30*time.Minute},
	} {
		if got := c.w.Until(c.now); got != c.want {
			t.Errorf("%s at %s: until %s, want %s", c.w, c.now.Format("15:04"), got, c.want)
		}
	}
	for _, bad := range []string{"22-06", "22:00", "25:00-06:00", "06:00-06:00", "ab:cd-06:00"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
	if w, err := ParseWindow(" "); w != nil || err != nil {
		t.Errorf("an empty window = %v, %v; want none", w, err)
	}
}
