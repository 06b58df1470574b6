package arch

import "testing"

func TestJumpTarget(t *testing.T) {
	for _, a := range []*Arch{AMD64, ARM64} {
		const at = 0x555500001000
		for _, to := range []uint64{at + 0x100, at - 0x4000, at + 0x7000000, 0x7f0000000000} {
			code, err := a.EncodeJump(at, to, ^uint64(0))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := a.JumpTarget(code, at)
			if !ok || got != to {
				t.Errorf("%s: jump at %#x to %#x (% x) decodes to %#x, %v", a.Name, at, to, code, got, ok)
			}
		}
		if _, ok := a.JumpTarget([]byte{0x90, 0x90, 0x90, 0x90}, at); ok {
			t.Errorf("%s: a non-jump decoded as a jump", a.Name)
		}
	}
}
