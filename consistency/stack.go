package consistency

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Memory reads target memory in bulk, e.g. with pread on /proc/PID/mem.
type Memory interface {
	ReadAt(p []byte, addr uint64) (int, error)
}

// initialRead is the first bulk read of a thread's stack from its SP; most
// stopped threads unwind completely within it.
const initialRead = 16 << 10

var errOutsideStack = errors.New("address outside the thread's stack")

// stackCache holds one contiguous window [base, base+len(buf)) of a
// thread's stack, grown by bulk reads, so unwinding never issues a system
// call per word.
type stackCache struct {
	mem     Memory
	lo, hi  uint64 // the stack mapping
	base    uint64
	buf     []byte
	spare   []byte
	ptrSize int
	reads   int
}

func (c *stackCache) reset(mem Memory, lo, hi uint64, ptrSize int) {
	c.mem, c.lo, c.hi, c.ptrSize = mem, lo, hi, ptrSize
	c.base, c.buf = 0, c.buf[:0]
}

// word reads one pointer-sized word at addr.
func (c *stackCache) word(addr uint64) (uint64, error) {
	n := uint64(c.ptrSize)
	if addr < c.lo || addr > c.hi-n || addr%n != 0 {
		return 0, fmt.Errorf("read %#x: %w", addr, errOutsideStack)
	}
	if err := c.ensure(addr, addr+n); err != nil {
		return 0, err
	}
	return c.load(c.buf[addr-c.base:]), nil
}

func (c *stackCache) load(b []byte) uint64 {
	if c.ptrSize == 4 {
		return uint64(binary.LittleEndian.Uint32(b))
	}
	return binary.LittleEndian.Uint64(b)
}

// ensure makes [from, to) cached, reading only what is missing and
// reading ahead upwards, where the rest of the stack lies.
func (c *stackCache) ensure(from, to uint64) error {
	end := c.base + uint64(len(c.buf))
	if len(c.buf) > 0 && from >= c.base && to <= end {
		return nil
	}
	if len(c.buf) == 0 {
		c.base, end = from, from
	}
	nb, ne := min(c.base, from), end
	if to > ne {
		ne = min(c.hi, max(to, ne+max(uint64(len(c.buf)), initialRead)))
	}
	size := ne - nb
	if uint64(cap(c.spare)) < size {
		c.spare = make([]byte, size, max(size, initialRead))
	}
	nbuf := c.spare[:size]
	copy(nbuf[c.base-nb:], c.buf)
	if err := c.read(nbuf[:c.base-nb], nb); err != nil {
		return err
	}
	if err := c.read(nbuf[end-nb:], end); err != nil {
		return err
	}
	c.spare, c.buf, c.base = c.buf[:0], nbuf, nb
	return nil
}

func (c *stackCache) read(p []byte, addr uint64) error {
	for len(p) > 0 {
		c.reads++
		n, err := c.mem.ReadAt(p, addr)
		if n < 0 || n > len(p) {
			return fmt.Errorf("read stack at %#x: bad length %d", addr, n)
		}
		p, addr = p[n:], addr+uint64(n)
		if len(p) == 0 {
			break
		}
		if err == nil && n == 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("read stack at %#x: %w", addr, err)
		}
	}
	return nil
}
