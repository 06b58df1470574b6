package consistency

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"testing"
)

func TestHideNegateRAState(t *testing.T) {
	// negate_ra_state; def_cfa_offset 0x2d; negate_ra_state;
	// advance_loc4 0x2d; negate_ra_state: only opcodes are replaced.
	b := []byte{0x2d, 0x0e, 0x2d, 0x2d, 0x04, 0x2d, 0, 0, 0, 0x2d}
	want := []byte{0, 0x0e, 0x2d, 0, 0x04, 0x2d, 0, 0, 0, 0}
	hideOp(b, 0x2d)
	if !bytes.Equal(b, want) {
		t.Fatalf("got % x, want % x", b, want)
	}
	if info := scanCFA(b); info.bad {
		t.Error("rewritten program does not decode")
	}
}

// A thread stopped in callee, which was called by caller and saved LR
// signed (paciasp; DW_CFA_AARCH64_negate_ra_state in its CFI). The return
// address into caller is found once the PAC bits are cleared.
func TestARM64SignedReturnAddress(t *testing.T) {
	const (
		caller  = 0x1000 // outermost frame
		callee  = 0x2000 // paciasp; stp x29, x30, [sp, #-16]!
		pacBits = 0x002a_0000_0000_0000
		mask    = 0xff7f_0000_0000_0000
	)
	var cfi []byte
	// CIE: version 1, no augmentation, code align 4, data align -8, RA x30,
	// CFA = sp+0.
	cie := []byte{0xff, 0xff, 0xff, 0xff, 1, 0, 4, 0x78, 30, 0x0c, 31, 0}
	cfi = binary.LittleEndian.AppendUint32(cfi, uint32(len(cie)))
	cfi = append(cfi, cie...)
	fde := func(begin, size uint64, instrs ...byte) {
		var body []byte
		body = binary.LittleEndian.AppendUint32(body, 0)
		body = binary.LittleEndian.AppendUint64(body, begin)
		body = binary.LittleEndian.AppendUint64(body, size)
		body = append(body, instrs...)
		cfi = binary.LittleEndian.AppendUint32(cfi, uint32(len(body)))
		cfi = append(cfi, body...)
	}
	fde(caller, 0x100, 0x07, 30) // undefined x30: the end
	// negate_ra_state; advance 1 (4 bytes); advance 1; CFA=sp+16;
	// x29 at CFA-16; x30 at CFA-8.
	fde(callee, 0x100, 0x2d, 0x41, 0x41, 0x0e, 16, 0x9d, 2, 0x9e, 1)
	fdes, err := parseCFI(cfi, binary.LittleEndian, 0, 8, 0)
	if err != nil {
		t.Fatal(err)
	}
	hideNegateRAState(fdes)
	m := newModule("synthetic", 0, elf.EM_AARCH64)
	m.text = []span{{0x1000, 0x10000}}
	m.fdes = m.fdes.Append(fdes)
	mods := NewModules(m)

	s := newFakeStack(stackBase, 4096)
	sp := s.hi() - 256
	s.put(sp, sp+64)                   // saved x29
	s.put(sp+8, pacBits|(caller+0x20)) // saved x30, signed
	regs := make([]uint64, 32)
	regs[30] = 0x9990 // LR already reused
	th := Thread{TID: 9, Regs: regs, PC: callee + 0x10, SP: sp, StackLo: s.base, StackHi: s.hi()}
	ranges := []Range{rng(caller, "caller")}

	pac := *ARM64
	pac.PACMask = mask
	res, err := Check(&pac, mods, s, []Thread{th}, ranges)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Busy) != 1 || !res.Busy[0].Precise || res.Busy[0].Addr != caller+0x20 || res.Fallbacks != 0 {
		t.Fatalf("with the PAC mask: busy %v, %d fallbacks", res.Busy, res.Fallbacks)
	}
	// Without the mask the signed address matches nothing: this is what
	// the mask is for.
	res, _ = Check(ARM64, mods, s, []Thread{th}, ranges)
	if len(res.Busy) != 0 {
		t.Fatalf("without the mask: busy %v", res.Busy)
	}
}
