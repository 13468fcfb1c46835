package admincli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
)

type runFunc = func(c *client, pos []string) (any, printer, error)

func clinicPath(id, rest string) string {
	return "/v1/admin/clinics/" + url.PathEscape(id) + rest
}

func listCmd(_ *flag.FlagSet) runFunc {
	return func(c *client, _ []string) (any, printer, error) {
		v, err := c.do("GET", "/v1/admin/clinics", nil)
		return v, printList, err
	}
}

func addCmd(fs *flag.FlagSet) runFunc {
	name := fs.String("name", "", "the clinic's name (required)")
	policy := fs.String("policy", "", "conflict policy: local-wins (default), cloud-wins or keep-both")
	return func(c *client, _ []string) (any, printer, error) {
		if strings.TrimSpace(*name) == "" {
			return nil, nil, errors.New("--name is required")
		}
		v, err := c.do("POST", "/v1/admin/clinics", map[string]string{"name": *name, "conflict_policy": *policy})
		return v, printObject, err
	}
}

func enrollCmd(fs *flag.FlagSet) runFunc {
	name := fs.String("name", "", "the clinic's name (required)")
	policy := fs.String("policy", "", "conflict policy: local-wins (default), cloud-wins or keep-both")
	ttl := fs.String("ttl", "", "how long the token stays valid, 1m..720h (default 72h)")
	return func(c *client, _ []string) (any, printer, error) {
		if strings.TrimSpace(*name) == "" {
			return nil, nil, errors.New("--name is required")
		}
		v, err := c.do("POST", "/v1/admin/enrollments", map[string]string{"name": *name, "conflict_policy": *policy, "ttl": *ttl})
		return v, printObject, err
	}
}

func postCmd(action string) func(fs *flag.FlagSet) runFunc {
	return func(_ *flag.FlagSet) runFunc {
		return func(c *client, pos []string) (any, printer, error) {
			v, err := c.do("POST", clinicPath(pos[0], "/"+action), nil)
			return v, printObject, err
		}
	}
}

func rotateCmd(fs *flag.FlagSet) runFunc {
	what := fs.String("what", "token", "what to rotate: token (the clinic's API token), broker (its RabbitMQ secret) or lockd (its lockd token)")
	return func(c *client, pos []string) (any, printer, error) {
		switch *what {
		case "token", "broker", "lockd":
		default:
			return nil, nil, fmt.Errorf("--what must be token, broker or lockd, not %q", *what)
		}
		v, err := c.do("POST", clinicPath(pos[0], "/"+*what), nil)
		return v, printObject, err
	}
}

// policyCmd sets the conflict policy, or shows it (from the clinic list:
// the API has no single-clinic read).
func policyCmd(_ *flag.FlagSet) runFunc {
	return func(c *client, pos []string) (any, printer, error) {
		if len(pos) == 2 {
			v, err := c.do("PUT", clinicPath(pos[0], "/conflict-policy"), map[string]string{"conflict_policy": pos[1]})
			return v, printObject, err
		}
		v, err := c.do("GET", "/v1/admin/clinics", nil)
		if err != nil {
			return nil, nil, err
		}
		cl, err := findClinic(v, pos[0])
		if err != nil {
			return nil, nil, err
		}
		out := map[string]any{"clinic": cl["id"], "conflict_policy": cl["conflict_policy"]}
		return out, printObject, nil
	}
}

func findClinic(v any, id string) (map[string]any, error) {
	m, _ := v.(map[string]any)
	list, _ := m["clinics"].([]any)
	for _, x := range list {
		if cl, ok := x.(map[string]any); ok && fmt.Sprint(cl["id"]) == id {
			return cl, nil
		}
	}
	return nil, &APIError{Status: 404, Code: "not_found", Message: "no such clinic"}
}

func retentionCmd(fs *flag.FlagSet) runFunc {
	days := fs.Int("after-days", 0, "with delete and backup: days after which files are deleted or moved to cold storage")
	return func(c *client, pos []string) (any, printer, error) {
		if len(pos) == 2 {
			v, err := c.do("PUT", clinicPath(pos[0], "/retention"), map[string]any{"mode": pos[1], "after_days": *days})
			return v, printObject, err
		}
		v, err := c.do("GET", clinicPath(pos[0], "/retention"), nil)
		return v, printObject, err
	}
}

// printList prints the clinics as a table.
func printList(w io.Writer, v any) error {
	m, _ := v.(map[string]any)
	list, _ := m["clinics"].([]any)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tPOLICY\tNODE\tLAST_SEQ\tSTATUS\tCREATED")
	for _, x := range list {
		cl, _ := x.(map[string]any)
		status := "enabled"
		if d, ok := cl["disabled_at"]; ok && d != nil {
			status = "disabled"
		}
		fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%s\t%v\n", cl["id"], cl["name"], cl["conflict_policy"], cl["node_id"], cl["last_seq"], status, cl["created_at"])
	}
	return tw.Flush()
}

// printObject prints an answer as "key  value" lines, nested keys dotted.
func printObject(w io.Writer, v any) error {
	var rows [][2]string
	flatten("", v, &rows)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func flatten(prefix string, v any, rows *[][2]string) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			flatten(key, x[k], rows)
		}
	case []any:
		if len(x) == 0 {
			*rows = append(*rows, [2]string{prefix, "(none)"})
		}
		for i, e := range x {
			flatten(fmt.Sprintf("%s[%d]", prefix, i), e, rows)
		}
	case nil:
		*rows = append(*rows, [2]string{prefix, "-"})
	default:
		*rows = append(*rows, [2]string{prefix, fmt.Sprint(x)})
	}
}
