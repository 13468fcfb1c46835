package client

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// plainHead takes an answer only when http.ReadResponse reads it the same:
// the same status, body and connection reuse.
func TestPlainHeadAgreesWithReadResponse(t *testing.T) {
	body := `{"resource":"patient/1","released":true}` + "\n"
	n := "Content-Length: 41\r\n"
	for _, tc := range []struct {
		answer string
		plain  bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + n + "Date: Mon, 07 Dec 2026 14:00:00 GMT\r\n\r\n" + body, true},
		{"HTTP/1.1 409 Conflict\r\ncontent-length: 41\r\n\r\n" + body, true},
		{"HTTP/1.1 200\r\n" + n + "\r\n" + body, true},
		{"HTTP/1.1 200 OK\r\n" + n + "Connection: close\r\n\r\n" + body, true},
		{"HTTP/1.1 200 OK\r\n" + n + "Connection: Keep-Alive\r\n\r\n" + body, true},
		{"HTTP/1.1 200 OK\r\nContent-Length:  41 \r\n\r\n" + body, true},
		{"HTTP/1.1 200 OK\r\n" + n + "\r\n" + body + "HTTP/1.1 200 OK\r\n", true}, // more follows: not kept
		{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true},
		// Left to http.ReadResponse.
		{"HTTP/1.0 200 OK\r\n" + n + "\r\n" + body, false},
		{"HTTP/1.1 200 OK\n" + n + "\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\n" + n + n + "\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 41\r\nContent-Length: 40\r\n\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n29\r\n" + body + "\r\n0\r\n\r\n", false},
		{"HTTP/1.1 200 OK\r\nConnection: upgrade\r\n" + n + "\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n" + n + "\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\nBad Name: x\r\n" + n + "\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\nX: a\x00b\r\n" + n + "\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: +41\r\n\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\n\r\n" + body, false},
		{"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false},
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n" + n + "\r\n" + body, false},
		{"HTTP/1.1 2x0 OK\r\n" + n + "\r\n" + body, false},
		{"HTTP/1.1 200 OK\r\n" + n, false}, // the head not all there
		{"garbage\r\n\r\n", false},
	} {
		br := bufio.NewReaderSize(strings.NewReader(tc.answer), 4096)
		if _, err := br.Peek(1); err != nil {
			t.Fatal(err)
		}
		h, ok := plainHead(br)
		if ok != tc.plain {
			t.Errorf("plainHead(%q) ok = %v, want %v", tc.answer, ok, tc.plain)
			continue
		}
		if !ok {
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(tc.answer)), nil)
		if err != nil {
			t.Errorf("plainHead took %q, which http.ReadResponse refuses: %v", tc.answer, err)
			continue
		}
		want, _ := io.ReadAll(resp.Body)
		_, _ = br.Discard(h.size)
		got, _ := io.ReadAll(io.LimitReader(br, h.bodyLen))
		if h.status != resp.StatusCode || !bytes.Equal(got, want) || h.close != resp.Close {
			t.Errorf("plainHead(%q) = status %d, body %q, close %v; http.ReadResponse: %d, %q, %v",
				tc.answer, h.status, got, h.close, resp.StatusCode, want, resp.Close)
		}
	}
}

// BenchmarkAnswerHead reads lockd's answer to a release both ways.
func BenchmarkAnswerHead(b *testing.B) {
	answer := "HTTP/1.1 200 OK\r\nDate: Mon, 07 Dec 2026 14:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 41\r\n\r\n" +
		`{"resource":"patient/1","released":true}` + "\n"
	r := strings.NewReader(answer)
	br := bufio.NewReaderSize(r, 4096)
	var ans bytes.Buffer
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(answer)
			br.Reset(r)
			ans.Reset()
			_, _ = br.Peek(1)
			h, ok := plainHead(br)
			if !ok {
				b.Fatal("not plain")
			}
			_, _ = br.Discard(h.size)
			_, _ = ans.ReadFrom(io.LimitReader(br, h.bodyLen))
		}
	})
	b.Run("ReadResponse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(answer)
			br.Reset(r)
			ans.Reset()
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = ans.ReadFrom(io.LimitReader(resp.Body, maxAnswer))
			_ = resp.Body.Close()
		}
	})
}

// FuzzPlainHead: whatever plainHead takes, http.ReadResponse reads the
// same (status, body, connection reuse).
func FuzzPlainHead(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	f.Add("HTTP/1.1 409 Conflict\r\ncontent-length: 3\r\nConnection: close\r\n\r\n{}\n")
	f.Add("HTTP/1.1 503\r\nContent-Length:0\r\nRetry-After: 1\r\n\r\n")
	f.Fuzz(func(t *testing.T, answer string) {
		br := bufio.NewReaderSize(strings.NewReader(answer), 4096)
		if _, err := br.Peek(1); err != nil {
			return
		}
		h, ok := plainHead(br)
		if !ok {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(answer)), nil)
		if err != nil {
			t.Fatalf("plainHead took %q, which http.ReadResponse refuses: %v", answer, err)
		}
		want, err := io.ReadAll(resp.Body)
		_, _ = br.Discard(h.size)
		got, _ := io.ReadAll(io.LimitReader(br, h.bodyLen))
		if int64(len(got)) < h.bodyLen {
			return // a short body: the exchange fails either way
		}
		if err != nil || h.status != resp.StatusCode || !bytes.Equal(got, want) || h.close != resp.Close {
			t.Fatalf("plainHead(%q) = status %d, body %q, close %v; http.ReadResponse: %d, %q, %v (%v)",
				answer, h.status, got, h.close, resp.StatusCode, want, resp.Close, err)
		}
	})
}
