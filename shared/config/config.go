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
	"os"
	"reflect"
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
			return fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
		}
	}
	return applyEnv(reflect.ValueOf(dst).Elem(), envPrefix)
}

var durationType = reflect.TypeOf(time.Duration(0))

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
