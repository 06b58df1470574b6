package arch

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// ErrCannotDisplace means the instructions a jump overwrites cannot be
// moved elsewhere and still run correctly.
var ErrCannotDisplace = errors.New("cannot relocate the function's first instructions")

// amd64GateCheck is `cmpb $0, gate(%rip); jne target`: 13 bytes that send a
// call to the new function once the patch's gate byte is set. Flags are
// dead at a function's entry, so clobbering them is safe.
func amd64GateCheck(at, gate, target uint64) ([]byte, error) {
	code := make([]byte, 13)
	code[0], code[1] = 0x80, 0x3d // cmpb $imm8, disp32(%rip)
	d := int64(gate) - int64(at+7)
	if !fitsInt32(d) {
		return nil, fmt.Errorf("gate at %#x out of reach of %#x: %w", gate, at, ErrOutOfRange)
	}
	binary.LittleEndian.PutUint32(code[2:], uint32(int32(d)))
	code[6] = 0
	code[7], code[8] = 0x0f, 0x85 // jne rel32
	j := int64(target) - int64(at+13)
	if !fitsInt32(j) {
		return nil, fmt.Errorf("target %#x out of reach of %#x: %w", target, at, ErrOutOfRange)
	}
	binary.LittleEndian.PutUint32(code[9:], uint32(int32(j)))
	return code, nil
}

// amd64Displace relocates the instructions at the start of code (running
// at addr) that an n-byte jump overwrites, so that they run at to. It stops
// early at an unconditional transfer (ret, jmp): the bytes after it up to n
// are then padding. covered is how many original bytes the relocated
// instructions stand for; when fallsThrough is true the caller must append
// a jump back to addr+covered.
func amd64Displace(code []byte, addr uint64, n int, to uint64) (out []byte, covered int, fallsThrough bool, err error) {
	for covered < n {
		if covered >= len(code) {
			return nil, 0, false, fmt.Errorf("%w: function ends inside the jump", ErrCannotDisplace)
		}
		inst, err := x86asm.Decode(code[covered:], 64)
		if err != nil {
			return nil, 0, false, fmt.Errorf("%w: undecodable instruction at %#x", ErrCannotDisplace, addr+uint64(covered))
		}
		raw := code[covered : covered+inst.Len]
		oldNext := addr + uint64(covered+inst.Len)
		at := to + uint64(len(out))
		var moved []byte
		switch {
		case inst.PCRel == 0:
			moved = append([]byte(nil), raw...)
		case inst.PCRel == 4:
			disp := int64(int32(binary.LittleEndian.Uint32(raw[inst.PCRelOff:])))
			target := int64(oldNext) + disp
			if readsOverwritten(inst, uint64(target), addr, n) {
				return nil, 0, false, fmt.Errorf("%w: %v reads %#x, which the jump overwrites", ErrCannotDisplace, inst, target)
			}
			nd := target - int64(at+uint64(inst.Len))
			if !fitsInt32(nd) {
				return nil, 0, false, fmt.Errorf("%w: %v reaches %#x, out of range from %#x", ErrCannotDisplace, inst, target, at)
			}
			moved = append([]byte(nil), raw...)
			binary.LittleEndian.PutUint32(moved[inst.PCRelOff:], uint32(int32(nd)))
		case inst.PCRel == 1 && (inst.Op == x86asm.JMP || isJcc(inst.Op)):
			// Short branches get their 32-bit forms.
			target := int64(oldNext) + int64(int8(raw[inst.PCRelOff]))
			if inst.Op == x86asm.JMP {
				moved = []byte{0xe9, 0, 0, 0, 0}
			} else {
				moved = []byte{0x0f, 0x80 | (raw[inst.PCRelOff-1] & 0x0f), 0, 0, 0, 0}
			}
			nd := target - int64(at+uint64(len(moved)))
			if !fitsInt32(nd) {
				return nil, 0, false, fmt.Errorf("%w: branch out of range", ErrCannotDisplace)
			}
			binary.LittleEndian.PutUint32(moved[len(moved)-4:], uint32(int32(nd)))
		default:
			return nil, 0, false, fmt.Errorf("%w: %v at %#x", ErrCannotDisplace, inst, addr+uint64(covered))
		}
		out = append(out, moved...)
		covered += inst.Len
		if isTerminator(inst) {
			return out, covered, false, nil
		}
	}
	return out, covered, true, nil
}

// readsOverwritten reports whether inst's RIP-relative memory operand at
// target overlaps the n bytes at addr: once the jump is written, the
// moved copy would read the jump instead of the original bytes.
func readsOverwritten(inst x86asm.Inst, target, addr uint64, n int) bool {
	if inst.Op == x86asm.LEA {
		return false // an address, not a read
	}
	for _, a := range inst.Args {
		if m, ok := a.(x86asm.Mem); ok && m.Base == x86asm.RIP {
			return target < addr+uint64(n) && target+uint64(max(inst.MemBytes, 1)) > addr
		}
	}
	return false
}

func isJcc(op x86asm.Op) bool {
	switch op {
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE, x86asm.JL,
		x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS:
		return true
	}
	return false
}

func isTerminator(inst x86asm.Inst) bool {
	switch inst.Op {
	case x86asm.RET, x86asm.JMP, x86asm.UD2, x86asm.LRET, x86asm.IRET, x86asm.HLT:
		return true
	}
	return false
}

// amd64BranchesInto reports whether a direct branch or call in code
// (running at addr) targets (lo, hi). A function whose own code jumps into
// the bytes a jump overwrites cannot keep running its old body through a
// displaced copy.
func amd64BranchesInto(code []byte, addr, lo, hi uint64) bool {
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil || inst.Len == 0 {
			off++
			continue
		}
		if inst.PCRel > 0 && (inst.Op == x86asm.JMP || inst.Op == x86asm.CALL || isJcc(inst.Op) ||
			inst.Op == x86asm.LOOP || inst.Op == x86asm.LOOPE || inst.Op == x86asm.LOOPNE || inst.Op == x86asm.JRCXZ || inst.Op == x86asm.JECXZ) {
			var disp int64
			b := code[off+inst.PCRelOff:]
			switch inst.PCRel {
			case 1:
				disp = int64(int8(b[0]))
			case 4:
				disp = int64(int32(binary.LittleEndian.Uint32(b)))
			}
			target := int64(addr) + int64(off+inst.Len) + disp
			if uint64(target) > lo && uint64(target) < hi {
				return true
			}
		}
		off += inst.Len
	}
	return false
}
