package files

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/scsync/scsync/shared/filekey"
	"github.com/scsync/scsync/shared/ids"
	"github.com/scsync/scsync/shared/thumb"
)

// ErrNoThumbnail: the file has no thumbnail (not a PNG, JPEG or GIF, too
// large, not present, or not matching its checksum).
var ErrNoThumbnail = errors.New("files: no thumbnail")

// thumbCacheBytes bounds a node's thumbnail cache.
const thumbCacheBytes = 32 << 20

// thumbCache is a node's LRU of thumbnails by clinic and checksum. Kept in
// memory, not in S3: a thumbnail then never outlives its original (a
// removed or un-synced file is refused before the cache is asked), and
// nodes stay stateless.
type thumbCache struct {
	mu    sync.Mutex
	bytes int
	order *list.List // of *thumbEntry, most recent first
	byKey map[string]*list.Element
}

type thumbEntry struct {
	key  string
	data []byte
}

func (c *thumbCache) get(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey == nil {
		return nil, false
	}
	e, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*thumbEntry).data, true
}

func (c *thumbCache) put(key string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey == nil {
		c.byKey, c.order = map[string]*list.Element{}, list.New()
	}
	if _, ok := c.byKey[key]; ok {
		return
	}
	c.byKey[key] = c.order.PushFront(&thumbEntry{key: key, data: data})
	c.bytes += len(data)
	for c.bytes > thumbCacheBytes && c.order.Len() > 1 {
		last := c.order.Back()
		en := last.Value.(*thumbEntry)
		c.order.Remove(last)
		delete(c.byKey, en.key)
		c.bytes -= len(en.data)
	}
}

// Thumbnail returns a JPEG thumbnail of clinic's file sha (thumb.Size
// pixels on its longest side), made on this node from the object in S3 —
// the side that holds the file — and cached in memory. The object is only
// read; only a file that may be downloaded has one.
func (s *Service) Thumbnail(ctx context.Context, clinic ids.ID, sha string) ([]byte, error) {
	sha, err := filekey.ParseSHA256(sha)
	if err != nil {
		return nil, err
	}
	f, err := s.get(ctx, clinic, sha)
	if err != nil {
		return nil, err
	}
	if err := downloadable(f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoThumbnail, err)
	}
	key := f.Key()
	if b, ok := s.thumbs.get(key); ok {
		return b, nil
	}
	if f.Size > thumb.MaxOriginal {
		return nil, ErrNoThumbnail
	}
	out, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.cfg.Bucket, Key: aws.String(key)})
	if err != nil {
		if isNotFound(err) {
			return nil, ErrNoThumbnail
		}
		return nil, fmt.Errorf("files: read %s for its thumbnail: %w", sha, err)
	}
	defer func() { _ = out.Body.Close() }()
	b, err := thumb.Make(out.Body, sha)
	if errors.Is(err, thumb.ErrNoThumbnail) || errors.Is(err, thumb.ErrMismatch) {
		return nil, ErrNoThumbnail
	}
	if err != nil {
		return nil, err
	}
	s.thumbs.put(key, b)
	return b, nil
}
