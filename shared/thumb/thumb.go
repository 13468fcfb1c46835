// Package thumb makes the viewer's image thumbnails (issue 21): a small
// JPEG of an original PNG, JPEG or GIF, made on the side that holds the
// file and cached on disk by the original's SHA-256. The original is only
// read, and only used when its bytes hash to the SHA-256 the record names
// (M19: originals are never modified, and a file changed on disk after its
// import does not lend its picture to the record).
package thumb

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // decoders the thumbnails read
	"image/jpeg"
	_ "image/png"
	"io"
	"os"
	"path/filepath"
	"regexp"
)

// Limits.
const (
	// Size is the longest side of a thumbnail, in pixels.
	Size = 256
	// MaxOriginal is the largest original read (bytes); larger files get no
	// thumbnail rather than a server that runs out of memory.
	MaxOriginal = 64 << 20
	// MaxPixels bounds the decoded original (width × height).
	MaxPixels = 50_000_000
)

// Errors.
var (
	// ErrNoThumbnail: the original is not a picture this package reads
	// (DICOM, a PDF…), too large, or not here.
	ErrNoThumbnail = errors.New("thumb: no thumbnail for this file")
	// ErrMismatch: the file's bytes do not hash to the SHA-256 asked for.
	ErrMismatch = errors.New("thumb: file does not match its checksum")
)

var shaRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Cache keeps thumbnails in Dir as <sha256>-<size>.jpg.
type Cache struct{ Dir string }

// Get returns the thumbnail of the original with sha, from the cache or
// made from open's bytes (then cached). open may return os.ErrNotExist.
func (c Cache) Get(sha string, open func() (io.ReadCloser, error)) ([]byte, error) {
	if !shaRE.MatchString(sha) {
		return nil, fmt.Errorf("checksum %q: %w", sha, ErrNoThumbnail)
	}
	path := filepath.Join(c.Dir, fmt.Sprintf("%s-%d.jpg", sha, Size))
	if b, err := os.ReadFile(path); err == nil {
		return b, nil
	}
	f, err := open()
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("original not here: %w", ErrNoThumbnail)
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	b, err := Make(f, sha)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Dir, 0o750); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(c.Dir, ".thumb-*")
	if err != nil {
		return nil, err
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if werr == nil && cerr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil || cerr != nil {
		_ = os.Remove(tmp.Name())
		return nil, errors.Join(werr, cerr)
	}
	return b, nil
}

// Make reads an original (at most MaxOriginal bytes), checks it hashes to
// sha, and returns its thumbnail: a JPEG whose longest side is Size (never
// enlarged).
func Make(r io.Reader, sha string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxOriginal+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxOriginal {
		return nil, fmt.Errorf("original over %d bytes: %w", MaxOriginal, ErrNoThumbnail)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != sha {
		return nil, ErrMismatch
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxPixels {
		return nil, ErrNoThumbnail
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, ErrNoThumbnail
	}
	var out bytes.Buffer
	if err := jpeg.Encode(&out, scale(img, Size), &jpeg.Options{Quality: 82}); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// scale shrinks img so its longest side is at most max, averaging the
// source pixels each target pixel covers (a box filter: no aliasing on
// radiographs' fine lines).
func scale(img image.Image, max int) image.Image {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	tw, th := w, h
	if w >= h && w > max {
		tw, th = max, (h*max+w/2)/w
	} else if h > w && h > max {
		tw, th = (w*max+h/2)/h, max
	}
	tw, th = maxInt(tw, 1), maxInt(th, 1)
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	for y := range th {
		y0, y1 := b.Min.Y+y*h/th, b.Min.Y+maxInt((y+1)*h/th, y*h/th+1)
		for x := range tw {
			x0, x1 := b.Min.X+x*w/tw, b.Min.X+maxInt((x+1)*w/tw, x*w/tw+1)
			var r, g, bl, a, n uint64
			for sy := y0; sy < y1; sy++ {
				for sx := x0; sx < x1; sx++ {
					cr, cg, cb, ca := img.At(sx, sy).RGBA()
					r, g, bl, a, n = r+uint64(cr), g+uint64(cg), bl+uint64(cb), a+uint64(ca), n+1
				}
			}
			i := dst.PixOffset(x, y)
			dst.Pix[i+0] = uint8(r / n >> 8)
			dst.Pix[i+1] = uint8(g / n >> 8)
			dst.Pix[i+2] = uint8(bl / n >> 8)
			dst.Pix[i+3] = uint8(a / n >> 8)
		}
	}
	return dst
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
