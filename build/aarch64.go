package build

import (
	"debug/elf"
	"encoding/binary"
	"regexp"
	"strconv"
	"strings"

	"github.com/hotpatch/hotpatch/target"
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
	case elf.R_AARCH64_LDST64_ABS_LO12_NC, elf.R_AARCH64_LD64_GOT_LO12_NC, elf.R_AARCH64_LD64_GOTPAGE_LO15:
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

// a64Kind says what an ADRP and its low part address.
type a64Kind uint8

const (
	kindAddr  a64Kind = iota // the symbol itself
	kindGOT                  // the symbol's GOT slot
	kindIE                   // the GOT slot of its thread-pointer offset (initial exec)
	kindDesc                 // its TLS descriptor
	kindGOTPg                // a GOT slot from the GOT's page (-fpic: LD64_GOTPAGE_LO15)
)

type pageKey struct {
	sym    *symbol
	addend int64
	kind   a64Kind
}

// AArch64 TLS relocation types that debug/elf does not name.
const (
	rTLSLDAddDTPRelHi12   = 528
	rTLSLDAddDTPRelLo12   = 529
	rTLSLDAddDTPRelLo12NC = 530
	rTLSLELdst8Lo12       = 552 // .. 559: LDST{8,16,32,64}_TPREL_LO12{,_NC}
	rTLSLELdst128Lo12     = 570
	rTLSLELdst128Lo12NC   = 571
	rTLSDescAdrPage21     = 562
	rTLSDescLd64Lo12      = 563
	rTLSDescAddLo12       = 564
	rTLSDescCall          = 569
	rTLSGDAdrPrel21       = 512
	rTLSLDLdPrel19        = 522 // TLSGD_ADR_PREL21 .. TLSLD_LD_PREL19: the traditional dialect
)

func movz64(rd uint32, imm uint64, hw uint32) uint32 {
	return 0xd2800000 | hw<<21 | uint32(imm&0xffff)<<5 | rd
}

func movk64(rd uint32, imm uint64, hw uint32) uint32 {
	return 0xf2800000 | hw<<21 | uint32(imm&0xffff)<<5 | rd
}

// runPreARM64 matches aarch64 code.
func runPreARM64(c *preCheck, obj, tgt []byte) error {
	type low struct {
		at      int
		r       reloc
		key     pageKey // the ADRP it completes
		check   a64Kind // what page|lo must be
		lo      uint64
		relaxed bool // a GOT load the linker turned into an ADD
	}
	var pend []pendingBranch
	var lows []low
	pages := map[pageKey]uint64{}
	fromADR := map[pageKey]bool{}
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
		setPage := func(key pageKey, page uint64, adr bool) error {
			if old, ok := pages[key]; ok && !adr && !fromADR[key] && old != page {
				// The same symbol and addend are on one page.
				return fail(i, "the target's code takes page %#x here and %#x elsewhere for the same reference", page, old)
			}
			if _, ok := pages[key]; !ok || !adr {
				pages[key], fromADR[key] = page, adr
			}
			return nil
		}
		if inTLS && (tlsNext || tlsGeneralDynamic(rs)) {
			// Traditional general dynamic (bl __tls_get_addr; nop), which
			// the linker rewrites whole: one for one.
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
				pend = append(pend, pendingBranch{i, i + int(od), p + uint64(td)})
			default:
				return mismatch()
			}
			i, j = i+4, j+4
			continue
		}
		for _, r := range rs {
			if elf.R_AARCH64(r.typ) == elf.R_AARCH64_NONE {
				continue
			}
			if r.cls.tls {
				lo, ok, err := c.tlsARM64(i, r, ow, tw)
				if err != nil {
					return err
				}
				if !ok {
					return mismatch()
				}
				if lo != nil {
					if lo.page {
						if err := setPage(pageKey{r.sym, r.addend, lo.kind}, lo.value, false); err != nil {
							return err
						}
					} else {
						lows = append(lows, low{at: i, r: r, key: pageKey{r.sym, r.addend, lo.kind}, check: lo.check, lo: lo.value})
					}
				}
				continue
			}
			f, scale := a64FieldOf(r.typ)
			kind := kindAddr
			if r.cls.got {
				kind = kindGOT
			}
			key := pageKey{r.sym, r.addend, kind}
			switch {
			case f == fieldData:
				return fail(i, "relocation %v in code, which run-pre matching does not check", elf.R_AARCH64(r.typ))
			case f == fieldPage && isADRP(ow) && isADR(tw) && ow&0x1f == tw&0x1f:
				// ADRP turned into an ADR of the same page.
				if err := setPage(key, p+uint64(a64ADRImm(tw)), true); err != nil {
					return err
				}
				continue
			case r.cls.got && f == fieldLo12 && isAddImm(tw) && ow&0x3ff == tw&0x3ff:
				// ldr xd, [xn, :got_lo12:s] relaxed to add xd, xn, :lo12:s.
				lows = append(lows, low{at: i, r: r, key: key, check: kindAddr, lo: uint64(tw >> 10 & 0xfff), relaxed: true})
				continue
			case ow&^f.mask() != tw&^f.mask():
				return mismatch()
			}
			switch f {
			case fieldPage:
				if err := setPage(key, p&^0xfff+uint64(a64ADRImm(tw)<<12), false); err != nil {
					return err
				}
			case fieldLo12:
				check := kind
				if elf.R_AARCH64(r.typ) == elf.R_AARCH64_LD64_GOTPAGE_LO15 {
					check = kindGOTPg
				}
				lows = append(lows, low{at: i, r: r, key: key, check: check, lo: uint64(tw>>10&0xfff) << scale})
			case fieldMOVW:
				addr, ok := c.symAddr(r)
				if !ok {
					return fail(i, "refers to %s with a MOVZ/MOVK, which run-pre matching cannot check", r.sym.name)
				}
				g := a64MOVWGroup(r.typ)
				if want := (addr + uint64(r.addend)) >> (16 * g) & 0xffff; uint64(tw>>5&0xffff) != want {
					return fail(i, "refers to %s, the target's code has %q at %#x", r.sym.name, a64Disasm(tw), p)
				}
			case fieldB26, fieldImm19, fieldImm14, fieldADR:
				_, td, ok := a64PCRel(tw)
				if !ok {
					return mismatch()
				}
				dest := p + uint64(td)
				if t, d := r.target(); t.sec == c.sec {
					pend = append(pend, pendingBranch{i, int(t.value-c.base) + int(d), dest})
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
	if err := c.checkBranches(obj, tgt, pend, objToTgt, skipA64Nops); err != nil {
		return err
	}
	// Each low part completes the page of the ADRP with the same symbol
	// and addend into the address the pair computes.
	paired := map[pageKey]bool{}
	for _, l := range lows {
		key := l.key
		if l.check == kindGOTPg {
			// ldr xd, [xn, #:gotpage_lo15:s]: xn holds the GOT's page.
			key = pageKey{}
			for k := range pages {
				if k.kind == kindAddr && k.sym.name == "_GLOBAL_OFFSET_TABLE_" && k.addend == 0 {
					key = k
				}
			}
		}
		page, ok := pages[key]
		if !ok {
			if l.r.cls.tls || l.check == kindGOTPg {
				return fail(l.at, "a thread-local or GOT access of %s without its ADRP", l.r.sym.name)
			}
			continue // an ADRP gcc shares with another access; nothing to pair
		}
		paired[key] = true
		addr := page | l.lo
		if l.check == kindGOTPg {
			addr = page + l.lo
		}
		switch l.check {
		case kindIE, kindDesc:
			if err := c.checkTLSSlot(l.at, l.r, addr, l.check); err != nil {
				return err
			}
			continue
		case kindGOT, kindGOTPg:
			if err := c.checkGOTSlot(l.at, l.r, addr); err != nil {
				return err
			}
			continue
		}
		if err := c.checkSym(l.at, l.r, addr-uint64(l.r.addend)); err != nil {
			return err
		}
	}
	if err := c.checkTables(objToTgt, skipA64Nops); err != nil {
		return err
	}
	// An ADRP no low part completes must still be the symbol's page.
	for key, page := range pages {
		if paired[key] || fromADR[key] || key.kind != kindAddr {
			continue
		}
		if addr, ok := c.symAddr(reloc{sym: key.sym, addend: key.addend}); ok && (addr+uint64(key.addend))&^0xfff != page {
			return fail(0, "the target's code takes page %#x for %s, which is on page %#x", page, key.sym.name, (addr+uint64(key.addend))&^0xfff)
		}
	}
	return nil
}

// a64Dispatch is gcc's jump through a table (aarch64_output_casesi):
//
//	ldrb  wT, [xB, wI, uxtw]        (ldrh ... uxtw #1, ldr ... uxtw #2)
//	adr   xA, .Lrtx
//	add   xD, xA, wT, sxtb #2       (sxth, sxtw; uxt* in some versions)
//	br    xD
//	.Lrtx:
//
// The table's entries, at xB (the table's ADRP+ADD), are the distances
// from .Lrtx to each case label in instructions: (.Lcase - .Lrtx) / 4.
type a64Dispatch struct {
	at     int    // the load
	base   uint32 // xB
	size   uint64 // of an entry: 1, 2 or 4
	signed bool
	shift  uint // 2
	anchor int  // .Lrtx, in the function
}

// a64Dispatches finds the table jumps of a function's code.
func a64Dispatches(code []byte) []a64Dispatch {
	var out []a64Dispatch
	le := binary.LittleEndian
	for k := 0; k+16 <= len(code); k += 4 {
		w0, w1, w2, w3 := le.Uint32(code[k:]), le.Uint32(code[k+4:]), le.Uint32(code[k+8:]), le.Uint32(code[k+12:])
		// LDRB/LDRH/LDR (register), 32-bit, with a UXTW index.
		var size uint64
		switch w0 & 0xffe00c00 {
		case 0x38600800:
			size = 1
		case 0x78600800:
			size = 2
		case 0xb8600800:
			size = 4
		default:
			continue
		}
		if w0>>13&7 != 2 || !isADR(w1) {
			continue
		}
		t, a := w0&0x1f, w1&0x1f
		// ADD (extended register), 64-bit: xD = xA + ext(wT) << imm3.
		if w2&0xffe00000 != 0x8b200000 || w2>>5&0x1f != a || w2>>16&0x1f != t || w2>>10&7 > 4 {
			continue
		}
		opt := w2 >> 13 & 7
		if opt&3 != uint32(size>>1) {
			continue // the extension does not match the entry's width
		}
		if w3&0xfffffc1f != 0xd61f0000 || w3>>5&0x1f != w2&0x1f {
			continue
		}
		out = append(out, a64Dispatch{at: k, base: w0 >> 5 & 0x1f, size: size, signed: opt&4 != 0, shift: uint(w2 >> 10 & 7),
			anchor: k + 4 + int(a64ADRImm(w1))})
	}
	return out
}

// a64Entry reads a jump-table entry: the distance in bytes from the
// dispatch's anchor.
func a64Entry(b []byte, d a64Dispatch) int64 {
	var v uint64
	for i := uint64(0); i < d.size; i++ {
		v |= uint64(b[i]) << (8 * i)
	}
	e := int64(v)
	if d.signed {
		e = sext(uint32(v), uint(d.size*8))
	}
	return e << d.shift
}

// dispatchFor finds the table jump that reads a table whose address the
// instruction at off (the ADD of its ADRP+ADD) computes: the one whose
// base register that ADD writes, the first after it when several are;
// with none, the function's only one.
func (c *preCheck) dispatchFor(off int) (a64Dispatch, bool) {
	if off < 0 || off+4 > len(c.obj) {
		return a64Dispatch{}, false
	}
	w := binary.LittleEndian.Uint32(c.obj[off:])
	ds := a64Dispatches(c.obj)
	if w&0xff800000 != 0x91000000 {
		return a64Dispatch{}, false // not an ADD (immediate)
	}
	var best *a64Dispatch
	for i := range ds {
		d := &ds[i]
		switch {
		case d.base != w&0x1f:
		case best == nil, d.at > off && (best.at < off || d.at < best.at), d.at < off && best.at < off && best.at < d.at:
			best = d
		}
	}
	if best == nil && len(ds) == 1 {
		best = &ds[0]
	}
	if best == nil {
		return a64Dispatch{}, false
	}
	return *best, true
}

// tlsGeneralDynamic reports the traditional TLS sequences' relocations
// (TLSGD_*, TLSLD_* of the module, the call to __tls_get_addr), which the
// linker rewrites together with the call after them.
func tlsGeneralDynamic(rs []reloc) bool {
	for _, r := range rs {
		if r.typ >= rTLSGDAdrPrel21 && r.typ <= rTLSLDLdPrel19 || (r.cls.call && r.sym.name == "__tls_get_addr") {
			return true
		}
	}
	return false
}

// a64MOVWGroup is the 16-bit group a MOVW relocation fills.
func a64MOVWGroup(t uint32) uint {
	switch elf.R_AARCH64(t) {
	case elf.R_AARCH64_MOVW_UABS_G1, elf.R_AARCH64_MOVW_UABS_G1_NC:
		return 1
	case elf.R_AARCH64_MOVW_UABS_G2, elf.R_AARCH64_MOVW_UABS_G2_NC:
		return 2
	case elf.R_AARCH64_MOVW_UABS_G3:
		return 3
	}
	return 0
}

// tlsPart is what one instruction of a thread-local access contributes to
// the pairing of ADRPs and low parts (nil: it was checked on its own).
type tlsPart struct {
	page  bool
	kind  a64Kind // of the ADRP
	check a64Kind // what the low part's address must be
	value uint64
}

// tlsARM64 matches one instruction of a thread-local access. GNU ld
// leaves local exec alone, and turns initial exec and descriptors in an
// executable into local exec (MOVZ/MOVK of the thread-pointer offset, NOPs)
// or descriptors into initial exec (ADRP/LDR of the offset's GOT slot):
// every form is checked against where the target has the variable.
// ok is false for an instruction that is no form of the original's.
func (c *preCheck) tlsARM64(i int, r reloc, ow, tw uint32) (part *tlsPart, ok bool, err error) {
	const imm12, imm16 = 0x003ffc00, 0x001fffe0
	name := r.sym.name
	if t, _ := r.target(); t.name != "" {
		name = t.name // the variable a thread-local anchor stands for
	}
	tp := func() (uint64, error) {
		off, err := c.tlsOffset(i, r)
		return c.b.tgt.tpOff(off), err
	}
	field := func(mask uint32, want func() (uint64, error), get func(uint32) uint64) (*tlsPart, bool, error) {
		if ow&^mask != tw&^mask {
			return nil, false, nil
		}
		w, err := want()
		if err != nil {
			return nil, false, err
		}
		if get(tw) != w {
			return nil, false, c.fail(i, "reads thread-local %s, the target's code has %q, another variable's offset", name, a64Disasm(tw))
		}
		return nil, true, nil
	}
	lo12 := func(w uint32) uint64 { return uint64(w >> 10 & 0xfff) }
	rd := ow & 0x1f
	relaxedLE := func(g uint32, reg uint32) (*tlsPart, bool, error) {
		v, err := tp()
		if err != nil {
			return nil, false, err
		}
		want := movz64(reg, v>>16, 1)
		if g == 0 {
			want = movk64(reg, v, 0)
		}
		if tw != want {
			return nil, false, c.fail(i, "reads thread-local %s, the target's code has %q, another variable's offset", name, a64Disasm(tw))
		}
		return nil, true, nil
	}
	switch t := r.typ; {
	case t == uint32(elf.R_AARCH64_TLSLE_ADD_TPREL_HI12):
		return field(imm12, func() (uint64, error) { v, err := tp(); return v >> 12 & 0xfff, err }, lo12)
	case t == uint32(elf.R_AARCH64_TLSLE_ADD_TPREL_LO12) || t == uint32(elf.R_AARCH64_TLSLE_ADD_TPREL_LO12_NC):
		return field(imm12, func() (uint64, error) { v, err := tp(); return v & 0xfff, err }, lo12)
	case t >= rTLSLELdst8Lo12 && t <= rTLSLELdst8Lo12+7 || t == rTLSLELdst128Lo12 || t == rTLSLELdst128Lo12NC:
		scale := (t - rTLSLELdst8Lo12) / 2
		if t >= rTLSLELdst128Lo12 {
			scale = 4
		}
		return field(imm12, func() (uint64, error) { v, err := tp(); return v & 0xfff, err }, func(w uint32) uint64 { return lo12(w) << scale })
	case t >= uint32(elf.R_AARCH64_TLSLE_MOVW_TPREL_G2) && t <= uint32(elf.R_AARCH64_TLSLE_MOVW_TPREL_G0_NC):
		g := map[uint32]uint{544: 2, 545: 1, 546: 1, 547: 0, 548: 0}[t]
		return field(imm16, func() (uint64, error) { v, err := tp(); return v >> (16 * g) & 0xffff, err }, func(w uint32) uint64 { return uint64(w >> 5 & 0xffff) })
	case t == rTLSLDAddDTPRelHi12:
		return field(imm12, func() (uint64, error) { v, err := c.tlsOffset(i, r); return v >> 12 & 0xfff, err }, lo12)
	case t == rTLSLDAddDTPRelLo12 || t == rTLSLDAddDTPRelLo12NC:
		return field(imm12, func() (uint64, error) { v, err := c.tlsOffset(i, r); return v & 0xfff, err }, lo12)
	case t == uint32(elf.R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21) || t == rTLSDescAdrPage21:
		kind := kindIE
		if t == rTLSDescAdrPage21 {
			kind = kindDesc
		}
		if isADRP(tw) && tw&0x1f == rd {
			return &tlsPart{page: true, kind: kind, value: (c.tgtAddr+uint64(i))&^0xfff + uint64(a64ADRImm(tw)<<12)}, true, nil
		}
		return relaxedLE(1, rd)
	case t == uint32(elf.R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC):
		if ow&^imm12 == tw&^imm12 {
			return &tlsPart{kind: kindIE, check: kindIE, value: lo12(tw) << 3}, true, nil
		}
		return relaxedLE(0, rd)
	case t == rTLSDescLd64Lo12:
		rn := ow >> 5 & 0x1f
		switch {
		case ow&^imm12 == tw&^imm12:
			return &tlsPart{kind: kindDesc, check: kindDesc, value: lo12(tw) << 3}, true, nil
		case (ow&^imm12)&^0x1f|rn == tw&^imm12:
			// Relaxed to initial exec: ldr x0, [x0, :gottprel_lo12:s].
			return &tlsPart{kind: kindDesc, check: kindIE, value: lo12(tw) << 3}, true, nil
		}
		return relaxedLE(0, rn)
	case t == rTLSDescAddLo12:
		if ow&^imm12 == tw&^imm12 {
			return &tlsPart{kind: kindDesc, check: kindDesc, value: lo12(tw)}, true, nil
		}
		return nil, tw == a64NOP, nil
	case t == rTLSDescCall:
		return nil, tw == ow || tw == a64NOP, nil
	}
	return nil, false, c.fail(i, "thread-local access with relocation %v, which run-pre matching does not check", elf.R_AARCH64(r.typ))
}

// checkGOTSlot checks that a GOT slot the target's code reads holds the
// address of the relocation's symbol: by the name of its dynamic
// relocation, or by the address it holds.
func (c *preCheck) checkGOTSlot(at int, r reloc, slot uint64) error {
	t, _ := r.target()
	if t.typ == elf.STT_SECTION {
		return nil
	}
	if name, ok := c.b.tgt.got[slot]; ok {
		if name != t.name {
			return c.fail(at, "refers to %s through the GOT, the target's code reads the GOT slot of %s at %#x", t.name, name, slot)
		}
		return nil
	}
	if v, ok := c.b.tgt.gotValue(slot); ok {
		// The slot holds the address the reference means: the symbol plus
		// the offset (aarch64's addend; x86-64's addend is the field's
		// distance from the end of the instruction).
		return c.checkSym(at, r, v-uint64(r.addend+r.cls.pcAdjust))
	}
	return nil
}

// symAddr is where the target has the symbol r refers to (without the
// addend), when it can be found.
func (c *preCheck) symAddr(r reloc) (uint64, bool) {
	t, d := r.target()
	if t.typ == elf.STT_SECTION || t.name == "" || t.sec == c.sec {
		return 0, false
	}
	var ts target.Symbol
	var err error
	if t.defined() {
		ts, err = c.b.tgt.lookup(t, c.u.orig.file)
	} else {
		ts, err = c.b.tgt.syms.Lookup(t.name, "")
	}
	if err != nil || ts.Section == elf.SHN_UNDEF || ts.Type == elf.STT_TLS || ts.Type == elf.STT_GNU_IFUNC {
		return 0, false
	}
	return ts.Value + uint64(d) - uint64(r.addend), true
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

// a64Clobberable are the registers a caller may keep across a call to a
// function gcc has seen not to write them: x0-x18 (x16 and x17 included,
// although a veneer may use them) and v0-v31 (v8-v15 are preserved only
// in their low halves). x30 is written by every call; NZCV is one of
// gcc's fixed registers, which -fipa-ra always counts as clobbered.
const a64Clobberable = uint64(1)<<19 - 1 | uint64(0xffffffff)<<32

// a64RegBit is the bit of a register in the builder's numbering: x0-x30
// (w0-w30) in 0-30, v0-v31 (and their b, h, s, d, q views) in 32-63; zero
// for the zero register and SP.
func a64RegBit(r arm64asm.Reg) uint64 {
	switch {
	case r >= arm64asm.W0 && r <= arm64asm.W30:
		return 1 << (r - arm64asm.W0)
	case r >= arm64asm.X0 && r <= arm64asm.X30:
		return 1 << (r - arm64asm.X0)
	case r >= arm64asm.B0 && r <= arm64asm.B31:
		return 1 << (32 + r - arm64asm.B0)
	case r >= arm64asm.H0 && r <= arm64asm.H31:
		return 1 << (32 + r - arm64asm.H0)
	case r >= arm64asm.S0 && r <= arm64asm.S31:
		return 1 << (32 + r - arm64asm.S0)
	case r >= arm64asm.D0 && r <= arm64asm.D31:
		return 1 << (32 + r - arm64asm.D0)
	case r >= arm64asm.Q0 && r <= arm64asm.Q31:
		return 1 << (32 + r - arm64asm.Q0)
	case r >= arm64asm.V0 && r <= arm64asm.V31:
		return 1 << (32 + r - arm64asm.V0)
	}
	return 0
}

var a64VecRE = regexp.MustCompile(`V(\d+)`)

// a64ArgRegs is the set of registers an operand names, and whether it is
// a list of several vector registers. Memory operands count for nothing.
func a64ArgRegs(a arm64asm.Arg) (set uint64, list bool) {
	switch a := a.(type) {
	case arm64asm.Reg:
		return a64RegBit(a), false
	case arm64asm.RegSP:
		return a64RegBit(arm64asm.Reg(a)), false
	case arm64asm.RegisterWithArrangement, arm64asm.RegisterWithArrangementAndIndex:
		// V3.4S, V1.S[2], {V0.16B, V1.16B}, {V28.16B-V31.16B}
		s := a.String()
		ms := a64VecRE.FindAllStringSubmatch(s, -1)
		var regs []int
		for _, m := range ms {
			n, _ := strconv.Atoi(m[1])
			regs = append(regs, n&31)
		}
		if len(regs) == 2 && strings.Contains(s, "-") {
			for n := (regs[0] + 1) & 31; n != regs[1]; n = (n + 1) & 31 {
				regs = append(regs, n)
			}
		}
		for _, n := range regs {
			set |= 1 << (32 + n)
		}
		return set, strings.HasPrefix(s, "{")
	}
	return 0, false
}

// a64Writeback is the base register a pre- or post-indexed access writes.
func a64Writeback(args arm64asm.Args) uint64 {
	for _, a := range args {
		if m, ok := a.(arm64asm.MemImmediate); ok && m.Mode != arm64asm.AddrOffset {
			return a64RegBit(arm64asm.Reg(m.Base))
		}
	}
	return 0
}

// a64Writes says which registers one instruction certainly writes, which
// it may write (an instruction the decoder does not know may write any),
// and whether it is a call through a register.
func a64Writes(w uint32) (sure, maybe uint64, indirect bool) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], w)
	in, err := arm64asm.Decode(b[:])
	if err != nil {
		return 0, ^uint64(0), false // LSE atomics, SVE, ...: anything
	}
	op := in.Op.String()
	wb := a64Writeback(in.Args)
	switch op {
	case "BL":
		return 0, 0, false // a direct call: followed through its relocation
	case "BLR":
		return 0, 0, true
	case "B", "BR", "RET", "CBZ", "CBNZ", "TBZ", "TBNZ", "NOP", "HINT", "YIELD", "WFE", "WFI", "SEV", "SEVL",
		"CMP", "CMN", "TST", "CCMP", "CCMN", "FCMP", "FCMPE", "FCCMP", "FCCMPE", "PRFM", "PRFUM", "MSR", "SYS",
		"DMB", "DSB", "ISB", "CLREX", "SVC", "HVC", "SMC", "BRK", "HLT", "DC", "IC", "AT", "TLBI", "ERET", "DRPS",
		"DCPS1", "DCPS2", "DCPS3":
		return wb, 0, false
	case "STXR", "STXRB", "STXRH", "STLXR", "STLXRB", "STLXRH", "STXP", "STLXP":
		s, _ := a64ArgRegs(in.Args[0]) // the status register
		return s | wb, 0, false
	case "LDR", "LDRB", "LDRH", "LDRSB", "LDRSH", "LDRSW", "LDUR", "LDURB", "LDURH", "LDURSB", "LDURSH", "LDURSW",
		"LDP", "LDNP", "LDPSW", "LDAR", "LDARB", "LDARH", "LDAXR", "LDAXRB", "LDAXRH", "LDXR", "LDXRB", "LDXRH",
		"LDAXP", "LDXP", "LDTR", "LDTRB", "LDTRH", "LDTRSB", "LDTRSH", "LDTRSW":
		for _, a := range in.Args {
			s, _ := a64ArgRegs(a)
			sure |= s
		}
		return sure | wb, 0, false
	}
	if strings.HasPrefix(op, "ST") {
		return wb, 0, false // stores, vector ones included
	}
	if strings.HasPrefix(op, "LD") {
		// Vector structure loads: the registers of the list.
		for _, a := range in.Args {
			s, _ := a64ArgRegs(a)
			maybe |= s
		}
		return wb, maybe, false
	}
	// Everything else writes its first operand.
	if in.Args[0] == nil {
		return wb, 0, false
	}
	s, list := a64ArgRegs(in.Args[0])
	if list {
		return wb, s, false // TBL/TBX name a list as a source; not a destination
	}
	return s | wb, 0, false
}

// regWritesARM64 collects the writes of a code section. The call of a
// TLS descriptor sequence (blr through TLSDESC_CALL) is no call: the
// descriptor's resolver preserves every register but x0.
func regWritesARM64(sec *section) (sure, maybe uint64, indirect bool) {
	tlsCall := map[uint64]bool{}
	for _, r := range sec.relocs {
		if r.typ == rTLSDescCall {
			tlsCall[r.off] = true
		}
	}
	for off := 0; off+4 <= len(sec.data); off += 4 {
		s, m, ind := a64Writes(binary.LittleEndian.Uint32(sec.data[off:]))
		sure, maybe = sure|s, maybe|m
		if ind && tlsCall[uint64(off)] {
			sure |= 1 // x0
			continue
		}
		indirect = indirect || ind
	}
	return sure, maybe, indirect
}
