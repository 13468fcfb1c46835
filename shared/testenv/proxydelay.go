package testenv

import (
	"io"
	"time"
)

// SetDelay makes the link slow: every chunk of bytes forwarded in either
// direction waits d first (0 restores a fast link). It applies to open
// connections too.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

func (p *Proxy) currentDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// copy forwards src to dst like io.Copy, holding each chunk for the link's
// delay.
func (p *Proxy) copy(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		r, err := src.Read(buf)
		if r > 0 {
			if d := p.currentDelay(); d > 0 {
				time.Sleep(d)
			}
			w, werr := dst.Write(buf[:r])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
