// Package config loads a service's typed configuration: the struct's defaults,
// then a YAML file, then environment variables under one prefix. Flags, where
// a binary has them, are applied by the caller last. Unknown YAML keys and
// unparsable values are errors that name the setting.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid wraps every configuration error.
var ErrInvalid = errors.New("config: invalid")

// Load fills dst (a pointer to a struct holding its defaults) from the YAML
// file at path (skipped when path is empty) and then from the environment:
// the setting at yaml path a.b_c is read from PREFIX_A_B_C.
func Load(path, envPrefix string, dst any) error {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%w: read %s: %w", ErrInvalid, path, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: %s: %s", ErrInvalid, path, plainYAMLError(err))
		}
	}
	return applyEnv(reflect.ValueOf(dst).Elem(), envPrefix)
}

var durationType = reflect.TypeOf(time.Duration(0))

var (
	unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)
	badValue     = regexp.MustCompile("cannot unmarshal !!\\w+ `([^`]*)` into (\\S+)")
)

// plainYAMLError rewrites the YAML decoder's messages, which name Go types
// ("field listne not found in type config.Config"), into words for the
// person editing the file ("unknown setting \"listne\"").
func plainYAMLError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = unknownField.ReplaceAllString(msg, `unknown setting "$1" (check the spelling and the indentation)`)
	msg = badValue.ReplaceAllStringFunc(msg, func(m string) string {
		sub := badValue.FindStringSubmatch(m)
		return fmt.Sprintf("%q is not %s", sub[1], kindWords(sub[2]))
	})
	return strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", "; ")), " ")
}

func kindWords(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration (like 30s, 5m, 24h)"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case goType == "string":
		return "text"
	default:
		return "a valid value here (a section, not a single value, or the other way round)"
	}
}

// CheckURL reports whether raw is an absolute URL with one of schemes and a
// host, in an error that names setting (e.g. "cloud.url"). Empty raw is not
// checked: whether a setting is required is the caller's rule.
func CheckURL(setting, raw string, schemes ...string) error {
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	want := strings.Join(schemes, "://, ") + "://"
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s is not a URL (want %s…)", setting, want)
	}
	if !slices.Contains(schemes, strings.ToLower(u.Scheme)) {
		if u.Scheme == "" || u.Host == "" && u.Opaque != "" {
			return fmt.Errorf("%s %q has no scheme: write it as %shost…", setting, redact(u, raw), schemes[0]+"://")
		}
		return fmt.Errorf("%s %q must start with %s", setting, redact(u, raw), want)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("%s %q has no host", setting, redact(u, raw))
	}
	return nil
}

// redact hides a password in a URL shown back in an error.
func redact(u *url.URL, raw string) string {
	if u != nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
	}
	return raw
}

func applyEnv(v reflect.Value, prefix string) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		key := prefix + "_" + strings.ToUpper(name)
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct {
			if err := applyEnv(fv, key); err != nil {
				return err
			}
			continue
		}
		raw, ok := os.LookupEnv(key)
		if !ok {
			continue
		}
		if err := set(fv, raw); err != nil {
			return fmt.Errorf("%w: %s=%q: %w", ErrInvalid, key, raw, err)
		}
	}
	return nil
}

func set(fv reflect.Value, raw string) error {
	if fv.Type() == durationType {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return err
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return err
		}
		fv.SetInt(n)
	case reflect.Slice:
		if fv.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported list type %s", fv.Type())
		}
		parts := strings.Split(raw, ",")
		fv.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported type %s", fv.Type())
	}
	return nil
}
