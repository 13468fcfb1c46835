package app

import (
	"bufio"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// header gives a handler the header net/http's way of adding each field
// would: canonical keys, repeated fields' values in order, no Host.
func TestHeaderAsNetHTTP(t *testing.T) {
	for _, head := range []string{
		"POST /v1/locks/acquire HTTP/1.1\r\nHost: lockd:8090\r\nUser-Agent: scsync-lockd-client\r\nAuthorization: Bearer x\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v1/locks/acquire HTTP/1.1\r\nhost: lockd\r\nx-forwarded-for: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\naccept-encoding: gzip\r\nx-b: \r\nCookie: a=1\r\ncookie: b=2\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
		"GET /metrics HTTP/1.0\r\nHost: h\r\n\r\n",
		"GET /healthz HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X-Many: v\r\n", 40) + "X-Other: w\r\n\r\n",
	} {
		var req fasthttp.Request
		if err := req.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
			t.Fatal(err)
		}
		want := http.Header{}
		for k, v := range req.Header.All() {
			want.Add(string(k), string(v))
		}
		want.Del("Host")
		if got := header(&req.Header); !reflect.DeepEqual(got, want) {
			t.Errorf("header(%q) = %v, want %v", head, got, want)
		}
	}
}

// BenchmarkRequest turns the Go client's acquire into an *http.Request.
func BenchmarkRequest(b *testing.B) {
	head := "POST /v1/locks/acquire HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nUser-Agent: scsync-lockd-client\r\nAuthorization: Bearer clinic-token-0123456789\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
	var ctx fasthttp.RequestCtx
	if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := request(&ctx); err != nil {
			b.Fatal(err)
		}
	}
}
