// Package leb128 decodes the variable-length numbers of DWARF call frame
// information and expressions from untrusted bytes. Delve's
// pkg/dwarf/leb128 panics on a number cut short by the end of its input;
// the unwinder and the builder read such bytes from files and processes
// and must report that instead.
package leb128

// Unsigned decodes the ULEB128 number at the start of b and returns it with
// the number of bytes it took. ok is false when b ends inside the number;
// n is then len(b). Bits past 64 are dropped.
func Unsigned(b []byte) (v uint64, n int, ok bool) {
	var shift uint
	for n < len(b) {
		c := b[n]
		n++
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			return v, n, true
		}
	}
	return v, n, false
}

// Signed is Unsigned for SLEB128.
func Signed(b []byte) (v int64, n int, ok bool) {
	var shift uint
	for n < len(b) {
		c := b[n]
		n++
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, n, true
		}
	}
	return v, n, false
}
