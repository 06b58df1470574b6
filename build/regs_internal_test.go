package build

import "testing"

// The registers aarch64 instructions write, as the register check sees them.
func TestA64Writes(t *testing.T) {
	x := func(ns ...int) (s uint64) {
		for _, n := range ns {
			s |= 1 << n
		}
		return s
	}
	v := func(ns ...int) (s uint64) {
		for _, n := range ns {
			s |= 1 << (32 + n)
		}
		return s
	}
	for _, c := range []struct {
		word        uint32
		text        string
		sure, maybe uint64
		indirect    bool
	}{
		{0x29409444, "ldp w4, w5, [x2, #4]", x(4, 5), 0, false},
		{0xf81f0fe3, "str x3, [sp, #-16]!", 0, 0, false},
		{0xc8077c41, "stxr w7, x1, [x2]", x(7), 0, false},
		{0x94000000, "bl .", 0, 0, false},
		{0xd63f0120, "blr x9", 0, 0, true},
		{0x6b02003f, "cmp w1, w2", 0, 0, false},
		{0x4cdfa001, "ld1 {v1.16b, v2.16b}, [x0], #32", x(0), v(1, 2), false},
		{0x4e0c1c83, "mov v3.s[1], w4", v(3), 0, false},
		{0xfd4007e8, "ldr d8, [sp, #8]", v(8), 0, false},
		{0x9000000b, "adrp x11, .", x(11), 0, false},
		{0x1e270051, "fmov s17, w2", v(17), 0, false},
		{0x4e062080, "tbl v0.16b, {v4.16b, v5.16b}, v6.16b", v(0), 0, false},
		{0xf8200020, "ldadd x0, x0, [x1] (not decoded)", 0, ^uint64(0), false},
	} {
		sure, maybe, ind := a64Writes(c.word)
		if sure != c.sure || maybe != c.maybe || ind != c.indirect {
			t.Errorf("%s: writes %#x, maybe %#x, indirect %v; want %#x, %#x, %v", c.text, sure, maybe, ind, c.sure, c.maybe, c.indirect)
		}
	}
}
