package arch

import "fmt"

// a64Branch decodes a direct branch: its target and kind. ok is false for
// anything else.
type a64Kind int

const (
	a64None   a64Kind = iota
	a64B              // b imm26
	a64BL             // bl imm26
	a64Bcond          // b.cond imm19
	a64CB             // cbz/cbnz imm19
	a64TB             // tbz/tbnz imm14
	a64ADR            // adr imm21
	a64ADRP           // adrp imm21, pages
	a64LDRLit         // ldr (literal) imm19
)

func sext(v uint32, bits uint) int64 { return int64(int32(v<<(32-bits)) >> (32 - bits)) }

// a64Decode classifies a PC-relative instruction at pc and computes the
// address it refers to.
func a64Decode(w uint32, pc uint64) (a64Kind, uint64) {
	switch {
	case w&0x7c000000 == 0x14000000:
		k := a64B
		if w&0x80000000 != 0 {
			k = a64BL
		}
		return k, pc + uint64(sext(w&0x3ffffff, 26)*4)
	case w&0xff000000 == 0x54000000:
		return a64Bcond, pc + uint64(sext(w>>5&0x7ffff, 19)*4)
	case w&0x7e000000 == 0x34000000:
		return a64CB, pc + uint64(sext(w>>5&0x7ffff, 19)*4)
	case w&0x7e000000 == 0x36000000:
		return a64TB, pc + uint64(sext(w>>5&0x3fff, 14)*4)
	case w&0x9f000000 == 0x10000000:
		return a64ADR, pc + uint64(sext(w>>5&0x7ffff<<2|w>>29&3, 21))
	case w&0x9f000000 == 0x90000000:
		return a64ADRP, pc&^0xfff + uint64(sext(w>>5&0x7ffff<<2|w>>29&3, 21)<<12)
	case w&0x3b000000 == 0x18000000:
		return a64LDRLit, pc + uint64(sext(w>>5&0x7ffff, 19)*4)
	}
	return a64None, 0
}

// a64Terminates reports an unconditional transfer: b, br, ret (any key).
func a64Terminates(w uint32) bool {
	switch {
	case w&0xfc000000 == 0x14000000: // b
		return true
	case w&0xfffffc1f == 0xd61f0000, w&0xfffffc1f == 0xd65f0000: // br, ret
		return true
	case w == 0xd65f0bff, w == 0xd65f0fff: // retaa, retab
		return true
	case w&0xfefff800 == 0xd61f0800: // braa/brab/braaz/brabz
		return true
	}
	return false
}

// a64Relocate returns w, which ran at pc, rewritten to run at at. Branches
// whose short form no longer reaches take a longer form; anything that
// cannot be rewritten is refused.
func a64Relocate(w uint32, pc, at uint64) ([]byte, error) {
	kind, target := a64Decode(w, pc)
	d := int64(target - at)
	switch kind {
	case a64None:
		return words(w), nil
	case a64B, a64BL:
		if nw, ok := encB(at, target, kind == a64BL); ok {
			return words(nw), nil
		}
	case a64Bcond, a64CB, a64TB:
		bits, lsb := uint(19), uint(5)
		if kind == a64TB {
			bits = 14
		}
		mask := uint32(1)<<bits - 1
		if d&3 == 0 && fitsSigned(d, bits+2) {
			return words(w&^(mask<<lsb) | uint32(d>>2)&mask<<lsb), nil
		}
		// The inverted condition skips a B that does reach.
		var inv uint32
		switch kind {
		case a64Bcond:
			if w&0xf == 0xe || w&0xf == 0xf { // b.al, b.nv: always
				break
			}
			inv = w&^(mask<<lsb) ^ 1 | 2<<lsb
		default:
			inv = w&^(mask<<lsb) ^ 1<<24 | 2<<lsb
		}
		if inv == 0 {
			if b, ok := encB(at, target, false); ok {
				return words(b), nil
			}
			break
		}
		if b, ok := encB(at+4, target, false); ok {
			return words(inv, b), nil
		}
	case a64ADR, a64ADRP:
		rd := w & 31
		if nw, ok := encADR(at, target, rd, kind == a64ADRP); ok {
			return words(nw), nil
		}
		if kind == a64ADR {
			if p, ok := encADR(at, target, rd, true); ok {
				return words(p, encADDImm(rd, rd, uint32(target&0xfff))), nil
			}
		}
	case a64LDRLit:
		if d&3 == 0 && fitsSigned(d, 21) {
			return words(w&^(0x7ffff<<5) | uint32(d>>2)&0x7ffff<<5), nil
		}
		// General-register loads go through their own register:
		// adrp xt, lit; add xt, xt, #:lo12:lit; ldr{,sw} t, [xt].
		rt := w & 31
		var ldr uint32
		switch w >> 30 {
		case 0:
			ldr = 0xb9400000 // ldr wt, [xn]
		case 1:
			ldr = 0xf9400000 // ldr xt, [xn]
		case 2:
			ldr = 0xb9800000 // ldrsw xt, [xn]
		}
		if w&(1<<26) != 0 || ldr == 0 {
			break
		}
		if p, ok := encADR(at, target, rt, true); ok {
			return words(p, encADDImm(rt, rt, uint32(target&0xfff)), ldr|rt<<5|rt), nil
		}
	}
	return nil, fmt.Errorf("%w: instruction %#08x at %#x refers to %#x, out of reach from %#x", ErrCannotDisplace, w, pc, target, at)
}

// a64LitSize is how many bytes a literal load reads (PRFM: none).
func a64LitSize(w uint32) uint64 {
	opc, simd := w>>30, w&(1<<26) != 0
	switch {
	case opc == 3:
		return 0
	case simd:
		return 4 << opc
	case opc == 1:
		return 8
	}
	return 4
}

// arm64Displace relocates the instructions an n-byte jump at addr
// overwrites so they run at to. It stops early after an unconditional
// transfer; when fallsThrough is true the caller appends a jump back to
// addr+covered.
func arm64Displace(code []byte, addr uint64, n int, to uint64) (out []byte, covered int, fallsThrough bool, err error) {
	if addr&3 != 0 || to&3 != 0 {
		return nil, 0, false, fmt.Errorf("%w: unaligned code address", ErrCannotDisplace)
	}
	for covered < n {
		if covered+4 > len(code) {
			return nil, 0, false, fmt.Errorf("%w: function ends inside the jump", ErrCannotDisplace)
		}
		w := le32(code[covered:])
		if kind, lit := a64Decode(w, addr+uint64(covered)); kind == a64LDRLit && a64LitSize(w) > 0 && lit < addr+uint64(n) && lit+a64LitSize(w) > addr {
			// Once the jump is written, the copy would load the jump.
			return nil, 0, false, fmt.Errorf("%w: literal load at %#x reads %#x, which the jump overwrites", ErrCannotDisplace, addr+uint64(covered), lit)
		}
		moved, err := a64Relocate(w, addr+uint64(covered), to+uint64(len(out)))
		if err != nil {
			return nil, 0, false, err
		}
		out = append(out, moved...)
		covered += 4
		if a64Terminates(w) {
			return out, covered, false, nil
		}
	}
	return out, covered, true, nil
}

// arm64BranchesInto reports whether a direct branch in code (running at
// addr) targets (lo, hi), or an ADR takes an address there (a computed
// branch may follow).
func arm64BranchesInto(code []byte, addr, lo, hi uint64) bool {
	for off := 0; off+4 <= len(code); off += 4 {
		kind, target := a64Decode(le32(code[off:]), addr+uint64(off))
		switch kind {
		case a64B, a64BL, a64Bcond, a64CB, a64TB, a64ADR:
			if target > lo && target < hi {
				return true
			}
		}
	}
	return false
}
