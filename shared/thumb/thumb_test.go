package thumb

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func pngOf(t *testing.T, w, h int) ([]byte, string) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b.Bytes())
	return b.Bytes(), hex.EncodeToString(sum[:])
}

// TestCache: a thumbnail is at most Size on its longest side, keeps the
// aspect, is cached (the original is not read again), leaves the original
// untouched, and is refused for bytes that do not match the checksum or a
// file that is not a picture.
func TestCache(t *testing.T) {
	t.Parallel()
	orig, sha := pngOf(t, 1024, 512)
	dir := t.TempDir()
	path := filepath.Join(dir, "original.png")
	if err := os.WriteFile(path, orig, 0o444); err != nil {
		t.Fatal(err)
	}
	c := Cache{Dir: filepath.Join(dir, "thumbs")}
	opens := 0
	open := func() (io.ReadCloser, error) { opens++; return os.Open(path) }
	for range 2 {
		b, err := c.Get(sha, open)
		if err != nil {
			t.Fatal(err)
		}
		img, err := jpeg.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("thumbnail is not a JPEG: %v", err)
		}
		if got := img.Bounds().Size(); got != (image.Point{Size, Size / 2}) {
			t.Errorf("thumbnail size = %v, want %dx%d", got, Size, Size/2)
		}
	}
	if opens != 1 {
		t.Errorf("original opened %d times, want once (then the cache)", opens)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
		t.Error("the original changed")
	}
	_, other := pngOf(t, 10, 10)
	if _, err := c.Get(other, open); !errors.Is(err, ErrMismatch) {
		t.Errorf("Get(other checksum) = %v, want ErrMismatch", err)
	}
	text := []byte("DICM not a picture")
	sum := sha256.Sum256(text)
	if _, err := Make(bytes.NewReader(text), hex.EncodeToString(sum[:])); !errors.Is(err, ErrNoThumbnail) {
		t.Errorf("Make(not a picture) = %v, want ErrNoThumbnail", err)
	}
	if _, err := c.Get(sha[:10], open); !errors.Is(err, ErrNoThumbnail) {
		t.Errorf("Get(bad checksum) = %v, want ErrNoThumbnail", err)
	}
}
