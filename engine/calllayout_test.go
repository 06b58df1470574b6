package engine

import (
	"testing"

	"github.com/hotpatch/hotpatch/arch"
)

// TestCallLayout pins the call data of each architecture: stubs left in a
// target by an earlier engine address it, and a later engine writes into it.
func TestCallLayout(t *testing.T) {
	for _, c := range []struct {
		a                             *arch.Arch
		saved, fpu, stack, size, stub uint64
	}{
		{arch.AMD64, 0, 320, 1344, 1344 + 64<<10, 192},
		{arch.ARM64, 320, 320, 5056, 5056 + 64<<10, 320},
	} {
		abi := c.a.CallStub()
		l := callLayoutFor(abi)
		if l.saved != c.saved || l.fpu != c.fpu || l.stack != c.stack || l.size != c.size || l.stub != c.stub {
			t.Errorf("%s: %+v", c.a.Name, l)
		}
		if l.saved%uint64(abi.SavedAlign) != 0 || l.saved+uint64(abi.SavedSize) > l.stack ||
			l.saved < callAreaOff && l.saved+uint64(abi.SavedSize) > callFuncOff {
			t.Errorf("%s: saved context at %d (%d bytes) overlaps", c.a.Name, l.saved, abi.SavedSize)
		}
		const base, data = 0x7f0000010000, 0x7f0000020000
		for i, v := range []byte{1, 0} {
			f := arch.CallFrame{Saved: data + l.saved, Func: data + callFuncOff, Done: data + callDoneOff, Value: v, FPU: data + l.fpu}
			code, marker, err := abi.Encode(base+uint64(i)*l.stub, f)
			if err != nil || uint64(len(code)) > l.stub || marker >= len(code) {
				t.Errorf("%s: stub of %d bytes (room %d), marker %d: %v", c.a.Name, len(code), l.stub, marker, err)
			}
		}
	}
}
