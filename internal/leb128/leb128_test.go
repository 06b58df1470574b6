package leb128

import "testing"

func TestDecode(t *testing.T) {
	for _, c := range []struct {
		in []byte
		u  uint64
		s  int64
		n  int
		ok bool
	}{
		{[]byte{2}, 2, 2, 1, true},
		{[]byte{0x7f}, 127, -1, 1, true},
		{[]byte{0x80, 0x01}, 128, 128, 2, true},
		{[]byte{0xe5, 0x8e, 0x26}, 624485, 624485, 3, true},
		{[]byte{0xc0, 0xbb, 0x78}, 1973696, -123456, 3, true},
		{[]byte{0x80}, 0, 0, 1, false},
		{nil, 0, 0, 0, false},
	} {
		u, n, ok := Unsigned(c.in)
		if u != c.u || n != c.n || ok != c.ok {
			t.Errorf("Unsigned(% x) = %d, %d, %v; want %d, %d, %v", c.in, u, n, ok, c.u, c.n, c.ok)
		}
		s, n, ok := Signed(c.in)
		if s != c.s || n != c.n || ok != c.ok {
			t.Errorf("Signed(% x) = %d, %d, %v; want %d, %d, %v", c.in, s, n, ok, c.s, c.n, c.ok)
		}
	}
	// Longer than 64 bits: the high bits are dropped, never a panic.
	long := append(make([]byte, 0, 12), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
	if _, n, ok := Unsigned(long); n != 12 || !ok {
		t.Errorf("long number: %d bytes, %v", n, ok)
	}
}
