package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/scsync/scsync/local-server/internal/store"
)

type scopeAnswer struct {
	store.Scope
	Note    string `json:"note"`
	Message string `json:"message"`
}

// Scope prints the sync scope of the running server in plain words.
func Scope(ctx context.Context, w io.Writer, base string) error {
	var a scopeAnswer
	if err := getJSON(ctx, base+"/v1/scope", &a); err != nil {
		return err
	}
	printScope(w, a)
	return nil
}

// SetScope replaces the sync scope of the running server.
func SetScope(ctx context.Context, w io.Writer, base string, sc store.Scope) error {
	body, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v1/scope", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("sc-local is not answering at %s (is it running?): %w", base, err)
	}
	defer resp.Body.Close()
	var a scopeAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return fmt.Errorf("scope: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scope refused: %s", a.Message)
	}
	fmt.Fprintln(w, "scope set.")
	printScope(w, a)
	return nil
}

func printScope(w io.Writer, a scopeAnswer) {
	list := func(l []string, all string) string {
		if len(l) == 0 {
			return all
		}
		return strings.Join(l, ", ")
	}
	kinds := make([]string, len(a.Kinds))
	for i, k := range a.Kinds {
		kinds[i] = string(k)
	}
	fmt.Fprintf(w, "kinds        %s\n", list(kinds, "all"))
	fmt.Fprintf(w, "modalities   %s\n", list(a.Modalities, "all"))
	switch {
	case a.Since != "":
		fmt.Fprintf(w, "period       studies of %s or later\n", a.Since)
	case a.LastDays > 0:
		fmt.Fprintf(w, "period       studies of the last %d days\n", a.LastDays)
	default:
		fmt.Fprintln(w, "period       all")
	}
	fmt.Fprintf(w, "note: %s\n", a.Note)
}
