package build

import (
	"debug/elf"
	"encoding/binary"

	"golang.org/x/arch/arm64/arm64asm"
)

// AArch64 run-pre matching. Every instruction is one 4-byte word, so the
// two functions match word for word, apart from alignment NOPs, once the
// fields a relocation fills are masked. What the static linker (GNU ld)
// changes, and what is accepted:
//
//   - ADRP+ADD/LDR pairs (ADR_PREL_PG_HI21 with ADD_ABS_LO12_NC or
//     LDSTn_ABS_LO12_NC): the page and the low 12 bits together must give
//     the symbol's address in the target. An ADRP may have become an ADR
//     of the same page (the Cortex-A53 erratum 843419 fix).
//   - GOT accesses (ADR_GOT_PAGE + LD64_GOT_LO12_NC) read the symbol's GOT
//     slot, or were relaxed to ADRP+ADD of the symbol itself.
//   - Branches (CALL26, JUMP26, CONDBR19, TSTBR14) reach the symbol, its
//     PLT entry, or a veneer (ADRP x16; ADD x16; BR x16) that leads to it.
//   - TLS sequences (descriptors, general dynamic, initial exec) are
//     rewritten to initial- or local-exec forms of the same length: their
//     instructions are matched one for one and not checked further.
//   - Section anchors: gcc reaches a file's static data through one ADRP+ADD
//     of the section's start and then fixed offsets; the relocation names
//     the section, resolved to the variable at that offset.

const (
	a64NOP  = 0xd503201f
	a64BTIC = 0xd503245f
)

// a64Field says which bits of an instruction a relocation fills, and how
// its value is read back.
type a64Field int

const (
	fieldNone  a64Field = iota
	fieldPage           // ADRP immhi:immlo, a 4 KiB page
	fieldLo12           // ADD or load/store imm12, the low 12 bits
	fieldB26            // B, BL
	fieldImm19          // B.cond, CBZ, CBNZ, LDR (literal)
	fieldImm14          // TBZ, TBNZ
	fieldADR            // ADR immhi:immlo
	fieldMOVW           // MOVZ/MOVK imm16 (-mcmodel=large)
	fieldData           // a data word in code; not matched
)

func a64FieldOf(t uint32) (f a64Field, scale uint) {
	switch elf.R_AARCH64(t) {
	case elf.R_AARCH64_ADR_PREL_PG_HI21, elf.R_AARCH64_ADR_PREL_PG_HI21_NC, elf.R_AARCH64_ADR_GOT_PAGE:
		return fieldPage, 0
	case elf.R_AARCH64_ADD_ABS_LO12_NC, elf.R_AARCH64_LDST8_ABS_LO12_NC:
		return fieldLo12, 0
	case elf.R_AARCH64_LDST16_ABS_LO12_NC:
		return fieldLo12, 1
	case elf.R_AARCH64_LDST32_ABS_LO12_NC:
		return fieldLo12, 2
	case elf.R_AARCH64_LDST64_ABS_LO12_NC, elf.R_AARCH64_LD64_GOT_LO12_NC:
		return fieldLo12, 3
	case elf.R_AARCH64_LDST128_ABS_LO12_NC:
		return fieldLo12, 4
	case elf.R_AARCH64_CALL26, elf.R_AARCH64_JUMP26:
		return fieldB26, 0
	case elf.R_AARCH64_CONDBR19, elf.R_AARCH64_LD_PREL_LO19:
		return fieldImm19, 0
	case elf.R_AARCH64_TSTBR14:
		return fieldImm14, 0
	case elf.R_AARCH64_ADR_PREL_LO21:
		return fieldADR, 0
	case elf.R_AARCH64_MOVW_UABS_G0, elf.R_AARCH64_MOVW_UABS_G0_NC, elf.R_AARCH64_MOVW_UABS_G1, elf.R_AARCH64_MOVW_UABS_G1_NC,
		elf.R_AARCH64_MOVW_UABS_G2, elf.R_AARCH64_MOVW_UABS_G2_NC, elf.R_AARCH64_MOVW_UABS_G3:
		return fieldMOVW, 0
	}
	return fieldData, 0
}

func (f a64Field) mask() uint32 {
	switch f {
	case fieldPage, fieldADR:
		return 0x60ffffe0
	case fieldLo12:
		return 0x003ffc00
	case fieldB26:
		return 0x03ffffff
	case fieldImm19:
		return 0x00ffffe0
	case fieldImm14:
		return 0x0007ffe0
	case fieldMOVW:
		return 0x001fffe0
	}
	return 0xffffffff
}

func sext(v uint32, bits uint) int64 { return int64(int32(v<<(32-bits)) >> (32 - bits)) }

// a64PCRel classifies a PC-relative instruction without relocation: its
// field and the distance from the instruction to where it leads.
func a64PCRel(w uint32) (a64Field, int64, bool) {
	switch {
	case w&0x7c000000 == 0x14000000: // B, BL
		return fieldB26, sext(w&0x03ffffff, 26) * 4, true
	case w&0xff000010 == 0x54000000, w&0x7e000000 == 0x34000000, w&0x3b000000 == 0x18000000: // B.cond, CBZ/CBNZ, LDR literal
		return fieldImm19, sext(w>>5&0x7ffff, 19) * 4, true
	case w&0x7e000000 == 0x36000000: // TBZ, TBNZ
		return fieldImm14, sext(w>>5&0x3fff, 14) * 4, true
	case w&0x9f000000 == 0x10000000: // ADR
		return fieldADR, a64ADRImm(w), true
	}
	return fieldNone, 0, false
}

func a64ADRImm(w uint32) int64 { return sext((w>>5&0x7ffff)<<2|w>>29&3, 21) }

func isADRP(w uint32) bool { return w&0x9f000000 == 0x90000000 }
func isADR(w uint32) bool  { return w&0x9f000000 == 0x10000000 }

// isAddImm reports ADD (immediate, 64-bit, no shift): the relaxed form of
// a GOT load.
func isAddImm(w uint32) bool { return w&0xffc00000 == 0x91000000 }

func a64Disasm(w uint32) string {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], w)
	in, err := arm64asm.Decode(b[:])
	if err != nil {
		return "?"
	}
	return arm64asm.GNUSyntax(in)
}

func skipA64Nops(code []byte, off int) int {
	for off+4 <= len(code) && binary.LittleEndian.Uint32(code[off:]) == a64NOP {
		off += 4
	}
	return off
}

type pageKey struct {
	sym    *symbol
	addend int64
	got    bool
}

// runPreARM64 matches aarch64 code.
func runPreARM64(c *preCheck, obj, tgt []byte) error {
	type pending struct {
		at      int
		objDest int
		tgtDest uint64
	}
	type low struct {
		at      int
		r       reloc
		lo      uint64
		relaxed bool // a GOT load the linker turned into an ADD
	}
	var pend []pending
	var lows []low
	pages := map[pageKey]uint64{}
	objToTgt := map[int]int{}
	le := binary.LittleEndian
	fail := c.fail
	i, j := 0, 0
	tlsNext := false // the NOP after a call to __tls_get_addr pairs with what replaced it
	for {
		if !tlsNext {
			i = skipA64Nops(obj, i)
		}
		if i+4 > len(obj) {
			break
		}
		rs := c.relocsIn(i, i+4)
		inTLS := tlsNext
		for _, r := range rs {
			inTLS = inTLS || r.cls.tls || (r.cls.call && r.sym.name == "__tls_get_addr")
		}
		if !inTLS {
			j = skipA64Nops(tgt, j)
		}
		if j+4 > len(tgt) {
			break
		}
		objToTgt[i] = j
		ow, tw := le.Uint32(obj[i:]), le.Uint32(tgt[j:])
		p := c.tgtAddr + uint64(j)
		mismatch := func() error {
			return fail(i, "the original build has %q, the target has %q at %#x", a64Disasm(ow), a64Disasm(tw), p)
		}
		if inTLS {
			// Relaxed to initial or local exec: MOVZ/MOVK, ADRP/LDR of the
			// offset's GOT slot, MRS/ADD or NOPs, one for one.
			tlsNext = false
			for _, r := range rs {
				tlsNext = tlsNext || (r.cls.call && r.sym.name == "__tls_get_addr")
			}
			i, j = i+4, j+4
			continue
		}
		if len(rs) == 0 {
			of, od, ok := a64PCRel(ow)
			switch {
			case ow == tw && !ok:
			case ok && ow&^of.mask() == tw&^of.mask():
				_, td, _ := a64PCRel(tw)
				pend = append(pend, pending{i, i + int(od), p + uint64(td)})
			default:
				return mismatch()
			}
			i, j = i+4, j+4
			continue
		}
		for _, r := range rs {
			f, scale := a64FieldOf(r.typ)
			key := pageKey{r.sym, r.addend, r.cls.got}
			switch {
			case f == fieldPage && isADRP(ow) && isADR(tw) && ow&0x1f == tw&0x1f:
				// ADRP turned into an ADR of the same page.
				pages[key] = p + uint64(a64ADRImm(tw))
				continue
			case r.cls.got && f == fieldLo12 && isAddImm(tw) && ow&0x3ff == tw&0x3ff:
				// ldr xd, [xn, :got_lo12:s] relaxed to add xd, xn, :lo12:s.
				lows = append(lows, low{at: i, r: r, lo: uint64(tw >> 10 & 0xfff), relaxed: true})
				continue
			case ow&^f.mask() != tw&^f.mask():
				return mismatch()
			}
			switch f {
			case fieldPage:
				pages[key] = p&^0xfff + uint64(a64ADRImm(tw)<<12)
			case fieldLo12:
				lows = append(lows, low{at: i, r: r, lo: uint64(tw>>10&0xfff) << scale})
			case fieldB26, fieldImm19, fieldImm14, fieldADR:
				_, td, ok := a64PCRel(tw)
				if !ok {
					return mismatch()
				}
				dest := p + uint64(td)
				if t, d := r.target(); t.sec == c.sec {
					pend = append(pend, pending{i, int(t.value-c.base) + int(d), dest})
					continue
				}
				err := c.checkSym(i, r, dest-uint64(r.addend))
				if err != nil && r.cls.call {
					if real, ok := c.veneer(dest); ok && c.checkSym(i, r, real-uint64(r.addend)) == nil {
						err = nil
					}
				}
				if err != nil {
					return err
				}
			}
		}
		i, j = i+4, j+4
	}
	if i = skipA64Nops(obj, i); i < len(obj) {
		return fail(i, "the target's function is shorter")
	}
	if j = skipA64Nops(tgt, j); j < len(tgt) {
		return fail(i, "the target's function is longer (%d more bytes at %#x)", len(tgt)-j, c.tgtAddr+uint64(j))
	}
	for _, pd := range pend {
		od := skipA64Nops(obj, pd.objDest)
		tj, ok := objToTgt[od]
		if od == len(obj) {
			tj, ok = len(tgt), true
		}
		if !ok {
			return fail(pd.at, "branch to +%#x, which is not an instruction of the target's function", pd.objDest)
		}
		got := int(pd.tgtDest - c.tgtAddr)
		if got >= 0 && got <= len(tgt) {
			got = skipA64Nops(tgt, got)
		}
		if got != tj {
			return fail(pd.at, "branch goes to %#x in the target, the original build's destination corresponds to %#x", pd.tgtDest, c.tgtAddr+uint64(tj))
		}
	}
	// Each low part completes the page of the ADRP with the same symbol
	// and addend into the address the pair computes.
	for _, l := range lows {
		page, ok := pages[pageKey{l.r.sym, l.r.addend, l.r.cls.got}]
		if !ok {
			continue // an ADRP gcc shares with another access; nothing to pair
		}
		addr := page | l.lo
		if l.r.cls.got && !l.relaxed {
			if t, _ := l.r.target(); t.typ != elf.STT_SECTION {
				if name, ok := c.b.tgt.got[addr]; ok && name != t.name {
					return fail(l.at, "refers to %s through the GOT, the target's code reads the GOT slot of %s at %#x", t.name, name, addr)
				}
			}
			continue
		}
		if err := c.checkSym(l.at, l.r, addr-uint64(l.r.addend)); err != nil {
			return err
		}
	}
	return nil
}

// veneer follows a linker-made long-branch veneer at addr (ADRP x16; ADD
// x16, x16; BR x16) to its destination.
func (c *preCheck) veneer(addr uint64) (uint64, bool) {
	code, ok := c.b.tgt.read(addr, 12)
	if !ok {
		return 0, false
	}
	le := binary.LittleEndian
	w0, w1, w2 := le.Uint32(code), le.Uint32(code[4:]), le.Uint32(code[8:])
	if !isADRP(w0) || w0&0x1f != 16 || w1&0xfffffc1f != 0x91000010 || w1>>5&0x1f != 16 || w2 != 0xd61f0200 {
		return 0, false
	}
	return addr&^0xfff + uint64(a64ADRImm(w0)<<12) + uint64(w1>>10&0xfff), true
}

// lineShiftARM64 compares two functions word by word: a difference must be
// the immediate of a MOVZ/MOVN/MOVK (imm16) or of an ADD/SUB/CMP (imm12)
// that moved says is a line number.
func lineShiftARM64(p, o []byte, moved func(a, b int64) bool) bool {
	le := binary.LittleEndian
	for off := 0; off+4 <= len(p); off += 4 {
		pw, ow := le.Uint32(p[off:]), le.Uint32(o[off:])
		if pw == ow {
			continue
		}
		var mask uint32
		var pv, ov int64
		switch {
		case pw&0x1f800000 == 0x12800000: // move wide (immediate)
			mask, pv, ov = 0x001fffe0, int64(pw>>5&0xffff), int64(ow>>5&0xffff)
		case pw&0x1f000000 == 0x11000000 && pw&(1<<22) == 0: // add/sub (immediate), unshifted
			mask, pv, ov = 0x003ffc00, int64(pw>>10&0xfff), int64(ow>>10&0xfff)
		default:
			return false
		}
		if pw&^mask != ow&^mask || !moved(ov, pv) {
			return false
		}
	}
	return true
}

// pltEntriesARM64 finds the PLT entries: ADRP x16, page; LDR x17, [x16,
// #lo12]; ADD x16, x16, #lo12; BR x17, preceded by BTI c in a BTI PLT.
// PLT0 has the same pair after STP x16, x30.
func pltEntriesARM64(f *elf.File) map[uint64]uint64 {
	out := map[uint64]uint64{}
	le := binary.LittleEndian
	for _, sec := range f.Sections {
		if sec.Name != ".plt" && sec.Name != ".iplt" {
			continue
		}
		code, err := sec.Data()
		if err != nil {
			continue
		}
		for i := 0; i+8 <= len(code); i += 4 {
			w0, w1 := le.Uint32(code[i:]), le.Uint32(code[i+4:])
			if !isADRP(w0) || w0&0x1f != 16 || w1&0xffc003ff != 0xf9400211 {
				continue
			}
			addr := sec.Addr + uint64(i)
			slot := addr&^0xfff + uint64(a64ADRImm(w0)<<12) + uint64(w1>>10&0xfff)*8
			out[addr] = slot
			if i >= 4 && le.Uint32(code[i-4:]) == a64BTIC {
				out[addr-4] = slot
			}
		}
	}
	return out
}
