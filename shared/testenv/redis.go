package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisAddr is the shared development Redis; override with SCSYNC_TEST_REDIS_ADDR.
func RedisAddr() string { return Env("SCSYNC_TEST_REDIS_ADDR", "127.0.0.1:6379") }

// Redis returns a client for the shared Redis and a key prefix private to the
// test; every key under the prefix is deleted when the test ends.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: RedisAddr()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		Unavailable(t, "redis", err)
	}
	prefix := Name("scsync_test") + ":"
	t.Cleanup(func() {
		deletePrefix(rdb, prefix)
		_ = rdb.Close()
	})
	return rdb, prefix
}

// CleanupRedisPrefix deletes every key under prefix on the Redis at addr
// when the test ends, for keys that a process the test started (lockd, a
// cloud node) writes under a prefix of the test's. Register it before the
// processes start, so that it runs after they stopped. A Redis that is gone
// by then (a private one the test stopped) took its keys with it: nothing
// is reported.
func CleanupRedisPrefix(t testing.TB, addr, prefix string) {
	t.Helper()
	t.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		defer func() { _ = rdb.Close() }()
		deletePrefix(rdb, prefix)
	})
}

func deletePrefix(rdb *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}
