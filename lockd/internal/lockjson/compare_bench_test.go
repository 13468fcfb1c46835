package lockjson

import (
	"bytes"
	"encoding/json"
	"testing"

	gojson "github.com/goccy/go-json"
	segjson "github.com/segmentio/encoding/json"

	"github.com/scsync/scsync/lockd/lockapi"
)

func benchPair() (lockapi.BatchRequest, lockapi.BatchResponse) {
	req := lockapi.BatchRequest{}
	resp := lockapi.BatchResponse{}
	for range 8 {
		req.Ops = append(req.Ops, lockapi.BatchOp{Acquire: &lockapi.AcquireRequest{Resource: "study/1-2", Holder: holder, TTLMillis: 30000, Version: "1.0"}})
		g := grant
		resp.Results = append(resp.Results, lockapi.BatchResult{Status: 200, Grant: &g})
	}
	return req, resp
}

func BenchmarkCodecs(b *testing.B) {
	req, resp := benchPair()
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			rb, _ := json.Marshal(req)
			var r lockapi.BatchRequest
			if err := strict(rb, &r); err != nil {
				b.Fatal(err)
			}
			ab, _ := json.Marshal(resp)
			var a lockapi.BatchResponse
			if err := json.Unmarshal(ab, &a); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lockjson", func(b *testing.B) {
		buf := make([]byte, 0, 4096)
		for b.Loop() {
			rb, _ := Append(buf[:0], req)
			var r lockapi.BatchRequest
			if !Decode(rb, &r) {
				b.Fatal("no")
			}
			ab, _ := Append(buf[:0], resp)
			var a lockapi.BatchResponse
			if !Decode(ab, &a) {
				b.Fatal("no")
			}
		}
	})
	const pf = segjson.DisallowUnknownFields | segjson.DontMatchCaseInsensitiveStructFields
	b.Run("segmentio", func(b *testing.B) {
		buf := make([]byte, 0, 4096)
		for b.Loop() {
			rb, err := segjson.Append(buf[:0], &req, segjson.EscapeHTML)
			if err != nil {
				b.Fatal(err)
			}
			var r lockapi.BatchRequest
			if rest, err := segjson.Parse(rb, &r, pf); err != nil || len(rest) != 0 {
				b.Fatal(err)
			}
			ab, _ := segjson.Append(buf[:0], &resp, segjson.EscapeHTML)
			var a lockapi.BatchResponse
			if rest, err := segjson.Parse(ab, &a, pf); err != nil || len(rest) != 0 {
				b.Fatal(err)
			}
		}
	})
	b.Run("goccy", func(b *testing.B) {
		for b.Loop() {
			rb, _ := gojson.Marshal(&req)
			var r lockapi.BatchRequest
			dec := gojson.NewDecoder(bytes.NewReader(rb))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&r); err != nil {
				b.Fatal(err)
			}
			ab, _ := gojson.Marshal(&resp)
			var a lockapi.BatchResponse
			dec = gojson.NewDecoder(bytes.NewReader(ab))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&a); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("goccy-unmarshal", func(b *testing.B) {
		for b.Loop() {
			rb, _ := gojson.Marshal(&req)
			var r lockapi.BatchRequest
			if err := gojson.Unmarshal(rb, &r); err != nil {
				b.Fatal(err)
			}
			ab, _ := gojson.Marshal(&resp)
			var a lockapi.BatchResponse
			if err := gojson.Unmarshal(ab, &a); err != nil {
				b.Fatal(err)
			}
		}
	})
}
