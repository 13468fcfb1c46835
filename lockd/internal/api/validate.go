package api

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/scsync/scsync/lockd/lockapi"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/version"
)

const (
	maxResource = 200 // bytes of a resource name
	maxText     = 200 // bytes of client, user and owner
	maxSecret   = 128
)

// validResource accepts names like "patient/123" or "study:7": letters,
// digits and . _ - : @ =, in segments joined by '/'. Segments are never empty,
// "." or "..", so a name reads the same in a JSON body and in the inspect URL
// path, and never needs escaping.
func validResource(s string) error {
	if s == "" {
		return invalid("resource is required")
	}
	if len(s) > maxResource {
		return invalid("resource is longer than %d bytes", maxResource)
	}
	for _, c := range s {
		ok := c < utf8.RuneSelf && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-:@=/", c))
		if !ok {
			return invalid("resource may hold only letters, digits and . _ - : @ = /")
		}
	}
	for seg := range strings.SplitSeq(s, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return invalid("resource has an empty, '.' or '..' segment")
		}
	}
	return nil
}

// validText accepts a required, printable, bounded string.
func validText(field, s string, max int) error {
	switch {
	case strings.TrimSpace(s) == "":
		return invalid("%s is required", field)
	case len(s) > max:
		return invalid("%s is longer than %d bytes", field, max)
	case !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0:
		return invalid("%s must be printable UTF-8", field)
	}
	return nil
}

func validClinic(c ids.ID, field string) error {
	if c <= 0 {
		return invalid("%s is required (a positive decimal id)", field)
	}
	return nil
}

// validAcquire checks an acquire request (its clinic is checked before) and
// returns the version in canonical form.
func validAcquire(req *lockapi.AcquireRequest) (string, error) {
	if err := validResource(req.Resource); err != nil {
		return "", err
	}
	if s := req.Holder.Side; s != lockapi.SideLocal && s != lockapi.SideCloud {
		return "", invalid(`holder.side must be "local" or "cloud"`)
	}
	if err := validText("holder.client", req.Holder.Client, maxText); err != nil {
		return "", err
	}
	if err := validText("holder.user", req.Holder.User, maxText); err != nil {
		return "", err
	}
	if req.Version == "" {
		return "", invalid(`version is required (the record's version, like "2.0")`)
	}
	v, err := version.Parse(req.Version)
	if err != nil {
		return "", invalid(`version must be A.B, like "2.0"`)
	}
	return v.String(), nil
}

// validHeld checks the fields that name a granted lock.
func validHeld(clinic ids.ID, resource string, token int64, secret string) error {
	if err := validClinic(clinic, "clinic"); err != nil {
		return err
	}
	if err := validResource(resource); err != nil {
		return err
	}
	if token <= 0 {
		return invalid("token is required (the fencing token of the grant)")
	}
	return validSecret(secret)
}

func validSecret(secret string) error {
	if secret == "" || len(secret) > maxSecret {
		return invalid("secret is required (at most %d bytes)", maxSecret)
	}
	return nil
}

func validNode(req lockapi.NodeRequest) error {
	if !ids.ValidCloudNode(req.Node) {
		return invalid("node must be a cloud node id (%d..%d)", ids.MinCloudNode, ids.MaxCloudNode)
	}
	return validSecret(req.Secret)
}
