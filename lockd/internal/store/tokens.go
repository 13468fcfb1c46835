package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/scsync/scsync/shared/ids"
)

// Clinic tokens issued by the cloud at enrollment live in Redis, as SHA-256
// digests (hex), so every replica knows a new, rotated or revoked token at
// once: <prefix>ctok:<digest> → clinic id, and <prefix>ctokc:<clinic> → the
// clinic's current digest (to remove it when it is replaced or revoked).

func (s *Store) tokenKey(digest string) string { return s.opts.Prefix + "ctok:" + digest }

func (s *Store) clinicTokenKey(clinic ids.ID) string {
	return s.opts.Prefix + "ctokc:" + clinic.String()
}

// setClinicToken replaces the clinic's token digest atomically.
var setClinicToken = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
if old then redis.call('DEL', ARGV[1] .. old) end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[3])
return {1}
`)

// deleteClinicToken removes the clinic's token digest.
var deleteClinicToken = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
if old then redis.call('DEL', ARGV[1] .. old) end
redis.call('DEL', KEYS[1])
return {1}
`)

// SetClinicToken makes digest (hex SHA-256 of the token) the clinic's only
// token; the one it replaces stops working at once.
func (s *Store) SetClinicToken(ctx context.Context, clinic ids.ID, digest string) error {
	_, err := s.run(ctx, setClinicToken, []string{s.clinicTokenKey(clinic), s.tokenKey(digest)},
		s.opts.Prefix+"ctok:", clinic.String(), digest)
	return err
}

// DeleteClinicToken revokes the clinic's token.
func (s *Store) DeleteClinicToken(ctx context.Context, clinic ids.ID) error {
	_, err := s.run(ctx, deleteClinicToken, []string{s.clinicTokenKey(clinic)}, s.opts.Prefix+"ctok:")
	return err
}

// ClinicOfToken returns the clinic whose token has digest; false when none.
func (s *Store) ClinicOfToken(ctx context.Context, digest string) (ids.ID, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	v, err := s.rdb.Get(ctx, s.tokenKey(digest)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	id, err := ids.Parse(v)
	if err != nil || id <= 0 {
		return 0, false, nil
	}
	return id, true, nil
}

func (s *Store) tokensSyncedKey() string { return s.opts.Prefix + "ctok:synced" }

// ClinicTokensSynced reports whether the whole set was put since Redis last
// lost its data.
func (s *Store) ClinicTokensSynced(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	n, err := s.rdb.Exists(ctx, s.tokensSyncedKey()).Result()
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return n == 1, nil
}

// PutClinicTokens sets every given clinic's token digest, then marks the set
// synced.
func (s *Store) PutClinicTokens(ctx context.Context, entries map[ids.ID]string) error {
	for clinic, digest := range entries {
		if err := s.SetClinicToken(ctx, clinic, digest); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if err := s.rdb.Set(ctx, s.tokensSyncedKey(), "1", 0).Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}
