package events

import (
	"fmt"
	"strconv"
	"strings"
)

// Label is the mode text a viewer shows next to the record e is about:
// "Editing by cloud (dr.kim)", "Saved", "Closed", "Closed (idle)",
// "Idle — closing soon", "Uploading 45%", "Downloading 10%", "Conflict".
// Events that leave the record in no particular mode (changed, reset, a
// transfer whose file is present) have an empty label. The viewer's app.js
// mirrors these texts.
func Label(e Event) string {
	switch e.Type {
	case TypeEditing:
		return editingBy(e)
	case TypeSaved:
		return "Saved"
	case TypeClosed:
		switch e.Reason {
		case ReasonIdle, ReasonExpired:
			return "Closed (" + e.Reason + ")"
		}
		return "Closed"
	case TypeIdleWarning:
		return "Idle — closing soon"
	case TypeConflict:
		return "Conflict"
	case TypeTransfer:
		if e.Transfer == nil {
			return ""
		}
		return transferLabel(*e.Transfer)
	}
	return ""
}

func editingBy(e Event) string {
	if e.Side == "" {
		return "Editing"
	}
	s := "Editing by " + e.Side
	if e.User != "" {
		s += " (" + e.User + ")"
	}
	return s
}

func transferLabel(t Transfer) string {
	switch t.State {
	case TransferQueued:
		return "Transfer queued"
	case TransferUploading, TransferDownloading:
		verb := "Uploading"
		if t.State == TransferDownloading {
			verb = "Downloading"
		}
		if t.BytesTotal <= 0 {
			return verb
		}
		return fmt.Sprintf("%s %d%%", verb, t.Percent())
	case TransferFailed:
		return "Transfer failed"
	}
	return ""
}

// Format renders e as one line for a terminal, e.g.
//
//	12:03:04  patient 383061948362752  Editing by cloud (dr.kim)  v2.0
//	12:03:09  patient 383061948362752  Saved v2.1  by cloud (dr.kim)
//	12:04:10  image 383061949001728  Uploading 45% (450 MB of 1.0 GB)
//
// The time is e.At in the local time zone. The record id is printed whole:
// Snowflake ids share their leading digits, so a shortened one says nothing.
func Format(e Event) string { return FormatTitled(e, "") }

// FormatTitled is Format with the title of the record e is about (a
// patient's name, a study's description) after its id, quoted, at most
// MaxTitle characters:
//
//	12:03:09  patient 383061948362752 "Kim Minji"  Saved v2.1  by cloud (dr.kim)
//
// Events do not carry titles (they are notifications, not data); the
// caller looks the record up. An empty title prints as Format does.
func FormatTitled(e Event, title string) string {
	ts := "--:--:--"
	if !e.At.IsZero() {
		ts = e.At.Local().Format("15:04:05")
	}
	if e.Type == TypeReset {
		return ts + "  reset: events were missed, re-fetch the state"
	}
	subject := strings.TrimSpace(e.Kind + " " + recordText(e))
	if title = strings.TrimSpace(title); title != "" && e.Record != 0 {
		subject += " " + quoteTitle(title)
	}
	return ts + "  " + subject + "  " + describe(e)
}

func recordText(e Event) string {
	if e.Record == 0 {
		return ""
	}
	return e.Record.String()
}

// MaxTitle is how many characters of a record's title FormatTitled prints.
const MaxTitle = 60

// quoteTitle quotes a title for a terminal: control characters escaped (a
// title is what people typed, and must not move the cursor or recolour the
// screen), cut at MaxTitle characters.
func quoteTitle(t string) string {
	if r := []rune(t); len(r) > MaxTitle {
		t = string(r[:MaxTitle-1]) + "…"
	}
	return strconv.Quote(t)
}

// describe is the part of Format after the record.
func describe(e Event) string {
	v := ""
	if !e.Version.IsZero() {
		v = "v" + e.Version.String()
	}
	by := ""
	if e.Side != "" {
		by = "by " + e.Side
		if e.User != "" {
			by += " (" + e.User + ")"
		}
	}
	switch e.Type {
	case TypeEditing:
		return join(editingBy(e), v, unfenced(e))
	case TypeSaved:
		return join(strings.TrimSpace("Saved "+v), by, unfenced(e))
	case TypeClosed:
		if e.Reason != "" && e.Reason != ReasonReleased {
			return join("Closed ("+e.Reason+")", by)
		}
		return join("Closed", by)
	case TypeIdleWarning:
		return join("Idle — closing soon", by)
	case TypeChanged:
		on := ""
		if e.Side != "" {
			on = "on " + e.Side
		}
		return join(strings.TrimSpace("Changed "+v), on)
	case TypeConflict:
		if e.Reason != "" {
			return join("Conflict ("+e.Reason+")", v)
		}
		return join("Conflict", v)
	case TypeTransfer:
		if e.Transfer == nil {
			return "Transfer"
		}
		return describeTransfer(*e.Transfer)
	case TypeDivergence:
		return "Clinic and cloud differ: " + e.Reason
	}
	return join(e.Type, v)
}

func unfenced(e Event) string {
	if e.Unfenced {
		return "unfenced — conflict risk"
	}
	return ""
}

func describeTransfer(t Transfer) string {
	switch t.State {
	case TransferUploading, TransferDownloading:
		if t.BytesTotal <= 0 {
			return transferLabel(t)
		}
		return fmt.Sprintf("%s (%s of %s)", transferLabel(t), Bytes(t.BytesDone), Bytes(t.BytesTotal))
	case TransferQueued:
		if t.BytesTotal > 0 {
			return "Transfer queued (" + Bytes(t.BytesTotal) + ")"
		}
		return "Transfer queued"
	case TransferPresent:
		if t.BytesTotal > 0 {
			return "File present (" + Bytes(t.BytesTotal) + ")"
		}
		return "File present"
	case TransferFailed:
		if t.Reason != "" {
			return "Transfer failed: " + t.Reason
		}
		return "Transfer failed"
	}
	return "Transfer " + t.State
}

// Bytes renders a size in decimal units: "512 B", "450 MB", "1.0 GB".
func Bytes(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	i := -1
	for f >= 999.5 && i < len(units)-1 {
		f /= 1000
		i++
	}
	if f < 9.95 {
		return fmt.Sprintf("%.1f %s", f, units[i])
	}
	return fmt.Sprintf("%.0f %s", f, units[i])
}

// join joins the non-empty parts with two spaces.
func join(parts ...string) string {
	out := parts[:0:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "  ")
}
