package arch

import (
	"bytes"
	"debug/elf"
	"encoding/binary"

	"golang.org/x/arch/arm64/arm64asm"
	"golang.org/x/arch/x86/x86asm"
)

// JumpTarget returns where a jump written by EncodeJump at at leads. It
// recognises only the short and long jumps this package encodes: the
// target is decoded, and the jump re-encoded and compared.
func (a *Arch) JumpTarget(code []byte, at uint64) (uint64, bool) {
	var to uint64
	switch a.Machine {
	case elf.EM_X86_64:
		in, err := x86asm.Decode(code, 64)
		if err != nil || in.Op != x86asm.JMP {
			return 0, false
		}
		switch arg := in.Args[0].(type) {
		case x86asm.Rel:
			to = at + uint64(in.Len) + uint64(int64(arg))
		case x86asm.Mem:
			if arg.Base != x86asm.RIP || arg.Disp != 0 || len(code) < in.Len+8 {
				return 0, false
			}
			to = binary.LittleEndian.Uint64(code[in.Len:])
		default:
			return 0, false
		}
	case elf.EM_AARCH64:
		if len(code) < 4 {
			return 0, false
		}
		in, err := arm64asm.Decode(code)
		if err != nil {
			return 0, false
		}
		switch {
		case in.Op == arm64asm.B && len(code) >= 4:
			rel, ok := in.Args[0].(arm64asm.PCRel)
			if !ok {
				return 0, false
			}
			to = at + uint64(int64(rel))
		case in.Op == arm64asm.LDR && len(code) >= 16:
			to = binary.LittleEndian.Uint64(code[8:])
		default:
			return 0, false
		}
	default:
		return 0, false
	}
	if short, ok := a.EncodeShortJump(at, to); ok && bytes.HasPrefix(code, short) {
		return to, true
	}
	if long := a.EncodeLongJump(at, to); bytes.HasPrefix(code, long) {
		return to, true
	}
	return 0, false
}
