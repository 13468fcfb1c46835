package files

import (
	"bytes"
	"fmt"
	"testing"
)

// TestThumbCacheBounded: the node's thumbnail cache keeps the most recently
// used thumbnails within its byte budget.
func TestThumbCacheBounded(t *testing.T) {
	t.Parallel()
	var c thumbCache
	item := bytes.Repeat([]byte{1}, 1<<20)
	for i := range 40 {
		c.put(fmt.Sprint(i), item)
		if i == 5 {
			if _, ok := c.get("0"); !ok { // 0 becomes recent
				t.Fatal("get(0) missed right after put")
			}
		}
	}
	if c.bytes > thumbCacheBytes {
		t.Errorf("cache holds %d bytes, want at most %d", c.bytes, thumbCacheBytes)
	}
	if _, ok := c.get("39"); !ok {
		t.Error("the newest thumbnail was evicted")
	}
	if _, ok := c.get("1"); ok {
		t.Error("an old, unused thumbnail was kept over the budget")
	}
}
