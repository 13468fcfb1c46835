package stack

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisPrefix returns a client of the shared Redis and a key prefix of the
// benchmark's own; cleanup deletes every key under it and closes the client.
func (e Env) RedisPrefix(ctx context.Context, cl *Cleanup, prefix string) (*redis.Client, string, error) {
	rdb := redis.NewClient(&redis.Options{Addr: e.RedisAddr, PoolSize: 64})
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, "", fmt.Errorf("redis at %s: %w", e.RedisAddr, err)
	}
	p := Name(prefix) + ":"
	cl.Add(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, p+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		_ = rdb.Close()
	})
	return rdb, p, nil
}
