package admincli

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
)

// The people commands call the clinic's account routes
// (/v1/clinics/{clinic}/users…) with the operator's admin token, which
// reaches every clinic's routes; the cloud audits them as the operator.

func usersPath(clinic, rest string) string {
	return "/v1/clinics/" + url.PathEscape(clinic) + "/users" + rest
}

// clinicFlag declares the required --clinic.
func clinicFlag(fs *flag.FlagSet) *string {
	return fs.String("clinic", "", "the clinic's id (required)")
}

func needClinic(clinic string) error {
	if strings.TrimSpace(clinic) == "" {
		return fmt.Errorf("%w: --clinic is required", errUsage)
	}
	return nil
}

func usersListCmd(fs *flag.FlagSet) runFunc {
	clinic := clinicFlag(fs)
	return func(c *client, _ []string) (any, printer, error) {
		if err := needClinic(*clinic); err != nil {
			return nil, nil, err
		}
		v, err := c.do("GET", usersPath(*clinic, ""), nil)
		return v, printUsers, err
	}
}

func usersAddCmd(fs *flag.FlagSet) runFunc {
	clinic := clinicFlag(fs)
	username := fs.String("username", "", "the person's login name (required; a-z 0-9 . _ -)")
	role := fs.String("role", "", "viewer, editor or admin (required)")
	name := fs.String("display-name", "", "the person's name as shown")
	return func(c *client, _ []string) (any, printer, error) {
		if err := needClinic(*clinic); err != nil {
			return nil, nil, err
		}
		if strings.TrimSpace(*username) == "" || strings.TrimSpace(*role) == "" {
			return nil, nil, fmt.Errorf("%w: --username and --role are required", errUsage)
		}
		pw, err := c.password()
		if err != nil {
			return nil, nil, err
		}
		v, err := c.do("POST", usersPath(*clinic, ""), map[string]string{"username": *username, "role": *role,
			"display_name": *name, "password": pw})
		return v, printObject, err
	}
}

// password reads a new person's password from the environment, or the
// first line of stdin (never a flag: flags show in ps).
func (c *client) password() (string, error) {
	if p := c.getenv(EnvPassword); p != "" {
		return p, nil
	}
	if c.stdin == nil {
		return "", fmt.Errorf("%w: set %s or give the password on stdin", errUsage, EnvPassword)
	}
	line, err := bufio.NewReader(c.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the password from stdin: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("%w: no password (set %s or give it on stdin)", errUsage, EnvPassword)
	}
	return line, nil
}

// usersSetCmd changes one person found by username or id.
func usersSetCmd(action string) func(fs *flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		clinic := clinicFlag(fs)
		return func(c *client, pos []string) (any, printer, error) {
			if err := needClinic(*clinic); err != nil {
				return nil, nil, err
			}
			id, err := c.personID(*clinic, pos[0])
			if err != nil {
				return nil, nil, err
			}
			var v any
			switch action {
			case "disable", "enable":
				v, err = c.do("PUT", usersPath(*clinic, "/"+url.PathEscape(id)), map[string]bool{"disabled": action == "disable"})
			case "reset-totp":
				v, err = c.do("DELETE", usersPath(*clinic, "/"+url.PathEscape(id)+"/totp"), nil)
			}
			return v, printObject, err
		}
	}
}

// personID finds the id of the clinic's person named user (a username, or
// an id itself).
func (c *client) personID(clinic, user string) (string, error) {
	v, err := c.do("GET", usersPath(clinic, ""), nil)
	if err != nil {
		return "", err
	}
	m, _ := v.(map[string]any)
	list, _ := m["items"].([]any)
	for _, x := range list {
		u, _ := x.(map[string]any)
		if fmt.Sprint(u["username"]) == strings.ToLower(user) || fmt.Sprint(u["id"]) == user {
			return fmt.Sprint(u["id"]), nil
		}
	}
	return "", &APIError{Status: 404, Code: "not_found", Message: fmt.Sprintf("clinic %s has no person %q", clinic, user)}
}

// printUsers prints a clinic's people as a table.
func printUsers(w io.Writer, v any) error {
	m, _ := v.(map[string]any)
	list, _ := m["items"].([]any)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSERNAME\tROLE\tSTATUS\tTOTP\tNAME")
	for _, x := range list {
		u, _ := x.(map[string]any)
		status := "enabled"
		if d, _ := u["disabled"].(bool); d {
			status = "disabled"
		}
		factor := "-"
		if t, ok := u["totp"].(bool); ok && t {
			factor = "yes"
		} else if ok {
			factor = "no"
		}
		name := ""
		if n, ok := u["display_name"]; ok && n != nil {
			name = fmt.Sprint(n)
		}
		fmt.Fprintf(tw, "%v\t%v\t%v\t%s\t%s\t%s\n", u["id"], u["username"], u["role"], status, factor, name)
	}
	return tw.Flush()
}
