package redisx

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestSentinelValidate(t *testing.T) {
	for _, c := range []struct {
		s    Sentinel
		want string
	}{
		{Sentinel{}, ""},
		{Sentinel{Addrs: []string{"s1:26379", "s2:26379"}, Master: "scsync"}, ""},
		{Sentinel{Addrs: []string{"s1:26379"}}, "redis.sentinel.master is required"},
		{Sentinel{Master: "scsync"}, "redis.sentinel.master is set without redis.sentinel.addrs"},
		{Sentinel{Addrs: []string{"s1"}, Master: "m"}, `"s1" is not host:port`},
	} {
		err := c.s.Validate("redis.sentinel")
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.s, err, c.want)
		}
	}
}

// Without Sentinel the client dials addr; with it, addr is not used.
func TestNewClient(t *testing.T) {
	plain := NewClient(&redis.Options{Addr: "127.0.0.1:1"}, Sentinel{})
	defer plain.Close()
	if got := plain.Options().Addr; got != "127.0.0.1:1" {
		t.Errorf("plain client addr %q", got)
	}
	fo := NewClient(&redis.Options{Addr: "127.0.0.1:1", Password: "pw"}, Sentinel{Addrs: []string{"127.0.0.1:2"}, Master: "m"})
	defer fo.Close()
	if got := fo.Options().Addr; got != "FailoverClient" {
		t.Errorf("failover client addr %q, want go-redis's FailoverClient marker", got)
	}
	if fo.Options().Password != "pw" {
		t.Errorf("the master password was not passed on")
	}
}
