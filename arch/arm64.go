package arch

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// ARM64 is the AArch64 description (AAPCS64 on Linux).
//
// The short jump is one B instruction (±128 MiB). The architecture lets a
// B at a function's entry be replaced by another B while other threads may
// execute it, so a site switches with one 4-byte write. The long jump is
// LDR x16, #8; BR x16; .quad target. x16 and x17 (IP0, IP1) may be
// clobbered between any call and the callee's entry, which is what makes
// the long jump, the gate check and the call stubs legal there.
var ARM64 = &Arch{
	Name:             "arm64",
	Machine:          elf.EM_AARCH64,
	PtrSize:          8,
	SyscallInsn:      []byte{0x01, 0x00, 0x00, 0xd4}, // svc #0
	InsnAlign:        4,
	SysMmap:          222,
	SysMprotect:      226,
	SysMunmap:        215,
	SysPrctl:         167,
	SysGetpid:        a64SysGetpid,
	SysRtSigreturn:   a64SysRtSigreturn,
	SysRtSigprocmask: a64SysRtSigprocmask,
	AuditArch:        0xc00000b7, // AUDIT_ARCH_AARCH64
	JumpReach:        1<<27 - 4,
	ShortJumpLen:     4,
	LongJumpLen:      16,
	StubLen:          16,
	Relocs:           arm64Relocs,
	Apply:            arm64Apply,

	EncodeShortJump: arm64ShortJump,
	EncodeLongJump:  arm64LongJump,
	EncodeStub:      arm64Stub,
	GateCheckLen:    16,
	EncodeGateCheck: arm64GateCheck,
	Displace:        arm64Displace,
	BranchesInto:    arm64BranchesInto,
	// 16-byte check, up to four moved instructions of at most 12 bytes
	// each, the way back, and the undo code with its jump: rounded up.
	MaxStubLen: 96,

	// ADRP reaches ±4 GiB in 4 KiB pages.
	FarReach:       1<<32 - 1<<12,
	CallReach:      1<<27 - 4,
	KeepEntry:      arm64KeepEntry,
	BackJumpShort:  true,
	TLSBlockOffset: arm64TLSBlockOffset,
	TLSCall:        TLSCallSymbol,
	TLSSequence:    arm64TLSSequenceLen,
}

var arm64Relocs = func() map[uint32]RelocInfo {
	m := map[uint32]RelocInfo{}
	add := func(t elf.R_AARCH64, need Need) {
		m[uint32(t)] = RelocInfo{Name: relocName(t), Need: need}
	}
	for _, t := range []elf.R_AARCH64{
		elf.R_AARCH64_NONE, elf.R_AARCH64_ABS64, elf.R_AARCH64_PREL64,
		elf.R_AARCH64_ADD_ABS_LO12_NC, elf.R_AARCH64_LDST8_ABS_LO12_NC, elf.R_AARCH64_LDST16_ABS_LO12_NC,
		elf.R_AARCH64_LDST32_ABS_LO12_NC, elf.R_AARCH64_LDST64_ABS_LO12_NC, elf.R_AARCH64_LDST128_ABS_LO12_NC,
		elf.R_AARCH64_MOVW_UABS_G0, elf.R_AARCH64_MOVW_UABS_G0_NC, elf.R_AARCH64_MOVW_UABS_G1,
		elf.R_AARCH64_MOVW_UABS_G1_NC, elf.R_AARCH64_MOVW_UABS_G2, elf.R_AARCH64_MOVW_UABS_G2_NC,
		elf.R_AARCH64_MOVW_UABS_G3,
	} {
		add(t, NeedNothing)
	}
	// PC-relative forms whose reach is limited: an import far away cannot
	// be referenced directly (the patch must use the GOT: -fPIC).
	for _, t := range []elf.R_AARCH64{
		elf.R_AARCH64_PREL32, elf.R_AARCH64_PREL16, elf.R_AARCH64_ADR_PREL_PG_HI21,
		elf.R_AARCH64_ADR_PREL_PG_HI21_NC, elf.R_AARCH64_ADR_PREL_LO21, elf.R_AARCH64_LD_PREL_LO19,
		elf.R_AARCH64_CONDBR19, elf.R_AARCH64_TSTBR14,
	} {
		add(t, NeedNear)
	}
	add(elf.R_AARCH64_CALL26, NeedPLT)
	add(elf.R_AARCH64_JUMP26, NeedPLT)
	add(elf.R_AARCH64_ADR_GOT_PAGE, NeedGOT)
	add(elf.R_AARCH64_LD64_GOT_LO12_NC, NeedGOT)
	add(elf.R_AARCH64_LD64_GOTPAGE_LO15, NeedGOT)
	for _, t := range []elf.R_AARCH64{
		elf.R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21, elf.R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC,
		elf.R_AARCH64_TLSIE_LD_GOTTPREL_PREL19,
	} {
		add(t, NeedGOTTPOff)
	}
	for _, t := range []elf.R_AARCH64{
		elf.R_AARCH64_TLSLE_ADD_TPREL_HI12, elf.R_AARCH64_TLSLE_ADD_TPREL_LO12, elf.R_AARCH64_TLSLE_ADD_TPREL_LO12_NC,
		rTLSLELDST8, rTLSLELDST8NC,
		rTLSLELDST16, rTLSLELDST16NC,
		rTLSLELDST32, rTLSLELDST32NC,
		rTLSLELDST64, rTLSLELDST64NC,
		elf.R_AARCH64_TLSLE_MOVW_TPREL_G2, elf.R_AARCH64_TLSLE_MOVW_TPREL_G1, elf.R_AARCH64_TLSLE_MOVW_TPREL_G1_NC,
		elf.R_AARCH64_TLSLE_MOVW_TPREL_G0, elf.R_AARCH64_TLSLE_MOVW_TPREL_G0_NC,
		elf.R_AARCH64_TLSDESC_ADR_PAGE21, elf.R_AARCH64_TLSDESC_LD64_LO12_NC, elf.R_AARCH64_TLSDESC_ADD_LO12_NC,
		elf.R_AARCH64_TLSDESC_CALL,
		elf.R_AARCH64_TLSGD_ADR_PAGE21, elf.R_AARCH64_TLSGD_ADD_LO12_NC,
	} {
		add(t, NeedTPOff)
	}
	m[uint32(elf.R_AARCH64_ABS32)] = RelocInfo{Name: "R_AARCH64_ABS32", Absolute32: true}
	m[uint32(elf.R_AARCH64_ABS16)] = RelocInfo{Name: "R_AARCH64_ABS16", Absolute32: true}
	return m
}()

// Local-exec load/store relocations that debug/elf does not name.
const (
	rTLSLELDST8     elf.R_AARCH64 = 552
	rTLSLELDST8NC   elf.R_AARCH64 = 553
	rTLSLELDST16    elf.R_AARCH64 = 554
	rTLSLELDST16NC  elf.R_AARCH64 = 555
	rTLSLELDST32    elf.R_AARCH64 = 556
	rTLSLELDST32NC  elf.R_AARCH64 = 557
	rTLSLELDST64    elf.R_AARCH64 = 558
	rTLSLELDST64NC  elf.R_AARCH64 = 559
	rTLSLELDST128   elf.R_AARCH64 = elf.R_AARCH64_TLSLE_LDST128_TPREL_LO12
	rTLSLELDST128NC elf.R_AARCH64 = elf.R_AARCH64_TLSLE_LDST128_TPREL_LO12_NC
)

// relocName names an AArch64 relocation type, including those debug/elf
// does not know.
func relocName(t elf.R_AARCH64) string {
	if t >= rTLSLELDST8 && t <= rTLSLELDST64NC {
		size := []string{"8", "16", "32", "64"}[(t-rTLSLELDST8)/2]
		name := "R_AARCH64_TLSLE_LDST" + size + "_TPREL_LO12"
		if (t-rTLSLELDST8)%2 == 1 {
			name += "_NC"
		}
		return name
	}
	return t.String()
}

// Instructions used by the encoders and rewrites.
const (
	a64NOP      = 0xd503201f
	a64BRK      = 0xd4200000
	a64BRX16    = 0xd61f0200 // br x16
	a64LDRX16P8 = 0x58000050 // ldr x16, #8
	a64PACIASP  = 0xd503233f
	a64PACIBSP  = 0xd503237f
	a64AUTIASP  = 0xd50323bf
	a64AUTIBSP  = 0xd50323ff
	a64BTIMask  = 0xffffff3f // bti, bti c, bti j, bti jc
	a64BTI      = 0xd503241f
	a64MRSTPX1  = 0xd53bd041 // mrs x1, tpidr_el0
	a64ADDX0X1  = 0x8b010000 // add x0, x0, x1
	a64MOVZX0   = 0xd2800000 // movz x0, #imm16, lsl #(hw*16)
	a64MOVKX0   = 0xf2800000
	a64IP0      = 16 // x16
)

func le32(b []byte) uint32               { return binary.LittleEndian.Uint32(b) }
func put32le(b []byte, v uint32)         { binary.LittleEndian.PutUint32(b, v) }
func words(ws ...uint32) []byte          { return appendWords(nil, ws...) }
func fitsSigned(v int64, bits uint) bool { return v >= -1<<(bits-1) && v < 1<<(bits-1) }

func appendWords(b []byte, ws ...uint32) []byte {
	for _, w := range ws {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	return b
}

// encB is B (or BL) from pc to target; ok is false when out of reach.
func encB(pc, target uint64, link bool) (uint32, bool) {
	d := int64(target - pc)
	if d&3 != 0 || !fitsSigned(d, 28) {
		return 0, false
	}
	op := uint32(0x14000000)
	if link {
		op = 0x94000000
	}
	return op | uint32(d>>2)&0x3ffffff, true
}

// encADR is ADR (page=false) or ADRP (page=true) of Rd at pc for target.
func encADR(pc, target uint64, rd uint32, page bool) (uint32, bool) {
	op := uint32(0x10000000)
	d := int64(target - pc)
	if page {
		op = 0x90000000
		d = (int64(target&^0xfff) - int64(pc&^0xfff)) >> 12
	}
	if !fitsSigned(d, 21) {
		return 0, false
	}
	return op | uint32(d&3)<<29 | uint32(d>>2&0x7ffff)<<5 | rd, true
}

// encADDImm is ADD Xd, Xn, #imm12.
func encADDImm(rd, rn, imm12 uint32) uint32 { return 0x91000000 | (imm12&0xfff)<<10 | rn<<5 | rd }

func arm64ShortJump(from, to uint64) ([]byte, bool) {
	w, ok := encB(from, to, false)
	if !ok {
		return nil, false
	}
	return words(w), true
}

// arm64LongJump is ldr x16, #8; br x16; .quad to.
func arm64LongJump(_, to uint64) []byte {
	code := words(a64LDRX16P8, a64BRX16)
	return binary.LittleEndian.AppendUint64(code, to)
}

// arm64Stub is a veneer through a GOT slot: adrp x16, slot; ldr x16,
// [x16, #:lo12:slot]; br x16; brk #0. BR through x16 is accepted by a
// `bti c` landing pad, so the stub may lead into code built for BTI.
func arm64Stub(from, slot uint64) ([]byte, error) {
	adrp, ok := encADR(from, slot, a64IP0, true)
	if !ok || slot&7 != 0 {
		return nil, fmt.Errorf("GOT slot %#x out of reach of stub at %#x: %w", slot, from, ErrOutOfRange)
	}
	ldr := 0xf9400000 | uint32(slot&0xfff)>>3<<10 | a64IP0<<5 | a64IP0
	return words(adrp, ldr, a64BRX16, a64BRK), nil
}

// arm64GateCheck is, at at:
//
//	adrp x16, gate
//	ldrb w16, [x16, #:lo12:gate]
//	cbz  w16, 1f
//	b    target
//	1:
//
// x16 is free at a function's entry, and no flags are touched.
func arm64GateCheck(at, gate, target uint64) ([]byte, error) {
	adrp, ok := encADR(at, gate, a64IP0, true)
	if !ok {
		return nil, fmt.Errorf("gate at %#x out of reach of %#x: %w", gate, at, ErrOutOfRange)
	}
	ldrb := 0x39400000 | uint32(gate&0xfff)<<10 | a64IP0<<5 | a64IP0
	cbz := 0x34000000 | 2<<5 | uint32(a64IP0) // cbz w16, .+8
	b, ok := encB(at+12, target, false)
	if !ok {
		return nil, fmt.Errorf("target %#x out of reach of %#x: %w", target, at, ErrOutOfRange)
	}
	return words(adrp, ldrb, cbz, b), nil
}

// arm64KeepEntry keeps a landing pad at the entry: BTI (any form), or
// PACIASP/PACIBSP, which sign LR and also act as `bti c`. An indirect call
// into a BTI-guarded page must land on one, so the jump goes after it.
// A stub that leaves for the new function first authenticates LR again
// (AUTIASP/AUTIBSP, with SP unchanged since the entry), so the new
// function's own prologue signs it exactly once.
func arm64KeepEntry(code []byte) (int, []byte) {
	if len(code) < 4 {
		return 0, nil
	}
	switch w := le32(code); {
	case w == a64PACIASP:
		return 4, words(a64AUTIASP)
	case w == a64PACIBSP:
		return 4, words(a64AUTIBSP)
	case w&a64BTIMask == a64BTI:
		return 4, nil
	}
	return 0, nil
}

// arm64TLSBlockOffset follows glibc's TLS variant I: the thread pointer
// points at a 16-byte TCB, and the executable's block, the first module,
// follows it at the next multiple of its alignment.
func arm64TLSBlockOffset(vaddr, _, align uint64) int64 {
	const tcb = 16
	align = max(align, 1)
	firstbyte := -(vaddr & (align - 1)) & (align - 1)
	off := (tcb + align - 1) / align * align
	if off-tcb < firstbyte {
		off += align
	}
	return int64(off - firstbyte)
}

// arm64TLSSequenceLen: the traditional general-dynamic sequence
//
//	adrp x0, :tlsgd:x            TLSGD_ADR_PAGE21
//	add  x0, x0, :tlsgd_lo12:x   TLSGD_ADD_LO12_NC
//	bl   __tls_get_addr          CALL26
//	nop
//
// is rewritten from the ADD on, consuming the call and the nop.
func arm64TLSSequenceLen(typ uint32) uint64 {
	if elf.R_AARCH64(typ) == elf.R_AARCH64_TLSGD_ADD_LO12_NC {
		return 12
	}
	return 0
}

func arm64Apply(r *Reloc) error {
	d, off := r.Data, r.Offset
	pastEnd := func() error { return fmt.Errorf("field at %#x past section end", off) }
	// The smallest field (ABS16, PREL16) is two bytes; instructions are four.
	if off+2 > uint64(len(d)) {
		return pastEnd()
	}
	var insn uint32
	if off+4 <= uint64(len(d)) {
		insn = le32(d[off:])
	}
	put := func(w uint32) error {
		if off+4 > uint64(len(d)) {
			return pastEnd()
		}
		put32le(d[off:], w)
		return nil
	}
	data := func(v uint64, size int, lo, hi int64) error {
		if off+uint64(size) > uint64(len(d)) {
			return pastEnd()
		}
		if size < 8 && (int64(v) < lo || int64(v) >= hi) {
			return fmt.Errorf("value %#x: %w", v, ErrOutOfRange)
		}
		switch size {
		case 2:
			binary.LittleEndian.PutUint16(d[off:], uint16(v))
		case 4:
			binary.LittleEndian.PutUint32(d[off:], uint32(v))
		default:
			binary.LittleEndian.PutUint64(d[off:], v)
		}
		return nil
	}
	imm12 := func(v uint64, shift uint) error {
		if v&(1<<shift-1) != 0 {
			return fmt.Errorf("offset %#x not aligned to %d bytes: %w", v, 1<<shift, ErrOutOfRange)
		}
		return put(insn&^(0xfff<<10) | uint32(v&0xfff)>>shift<<10)
	}
	branch := func(disp int64, bits uint, lsb uint) error {
		if disp&3 != 0 || !fitsSigned(disp, bits+2) {
			return fmt.Errorf("branch displacement %#x: %w", disp, ErrOutOfRange)
		}
		mask := uint32(1)<<bits - 1
		return put(insn&^(mask<<lsb) | uint32(disp>>2)&mask<<lsb)
	}
	adr := func(v int64, check bool) error {
		if check && !fitsSigned(v, 21) {
			return fmt.Errorf("value %#x: %w", v, ErrOutOfRange)
		}
		op := insn &^ (3<<29 | 0x7ffff<<5)
		return put(op | uint32(v&3)<<29 | uint32(v>>2&0x7ffff)<<5)
	}
	pageDelta := func(x, p int64) int64 { return (x&^0xfff - p&^0xfff) >> 12 }
	movw := func(v int64, shift uint, check, signed bool) error {
		x := v >> shift
		if check {
			lim := int64(1) << 16
			if signed && (x >= lim || x < -lim) || !signed && (v < 0 || x >= lim) {
				return fmt.Errorf("value %#x: %w", v, ErrOutOfRange)
			}
		}
		w := insn &^ (0xffff << 5)
		if signed {
			// MOVZ for a non-negative value, MOVN with the inverted bits
			// for a negative one.
			w &^= 3 << 29
			if x < 0 {
				x = ^x
			} else {
				w |= 2 << 29
			}
		}
		return put(w | uint32(x&0xffff)<<5)
	}
	S, A, P := int64(r.S), r.A, int64(r.P)
	G := int64(r.G)
	tp := r.TPOff + A
	switch t := elf.R_AARCH64(r.Type); t {
	case elf.R_AARCH64_NONE:
		return nil
	case elf.R_AARCH64_ABS64:
		return data(uint64(S+A), 8, 0, 0)
	case elf.R_AARCH64_ABS32:
		return data(uint64(S+A), 4, -1<<31, 1<<32)
	case elf.R_AARCH64_ABS16:
		return data(uint64(S+A), 2, -1<<15, 1<<16)
	case elf.R_AARCH64_PREL64:
		return data(uint64(S+A-P), 8, 0, 0)
	case elf.R_AARCH64_PREL32:
		return data(uint64(S+A-P), 4, -1<<31, 1<<32)
	case elf.R_AARCH64_PREL16:
		return data(uint64(S+A-P), 2, -1<<15, 1<<16)
	case elf.R_AARCH64_CALL26, elf.R_AARCH64_JUMP26:
		disp := S + A - P
		if !fitsSigned(disp, 28) && r.L != 0 {
			if A != 0 {
				return fmt.Errorf("branch to %#x%+d through a stub: %w", S, A, ErrOutOfRange)
			}
			disp = int64(r.L) - P
		}
		return branch(disp, 26, 0)
	case elf.R_AARCH64_CONDBR19, elf.R_AARCH64_LD_PREL_LO19:
		return branch(S+A-P, 19, 5)
	case elf.R_AARCH64_TSTBR14:
		return branch(S+A-P, 14, 5)
	case elf.R_AARCH64_ADR_PREL_LO21:
		return adr(S+A-P, true)
	case elf.R_AARCH64_ADR_PREL_PG_HI21:
		return adr(pageDelta(S+A, P), true)
	case elf.R_AARCH64_ADR_PREL_PG_HI21_NC:
		return adr(pageDelta(S+A, P), false)
	case elf.R_AARCH64_ADD_ABS_LO12_NC, elf.R_AARCH64_LDST8_ABS_LO12_NC:
		return imm12(uint64(S+A), 0)
	case elf.R_AARCH64_LDST16_ABS_LO12_NC:
		return imm12(uint64(S+A), 1)
	case elf.R_AARCH64_LDST32_ABS_LO12_NC:
		return imm12(uint64(S+A), 2)
	case elf.R_AARCH64_LDST64_ABS_LO12_NC:
		return imm12(uint64(S+A), 3)
	case elf.R_AARCH64_LDST128_ABS_LO12_NC:
		return imm12(uint64(S+A), 4)
	case elf.R_AARCH64_MOVW_UABS_G0, elf.R_AARCH64_MOVW_UABS_G0_NC,
		elf.R_AARCH64_MOVW_UABS_G1, elf.R_AARCH64_MOVW_UABS_G1_NC,
		elf.R_AARCH64_MOVW_UABS_G2, elf.R_AARCH64_MOVW_UABS_G2_NC, elf.R_AARCH64_MOVW_UABS_G3:
		v := uint64(S + A)
		var shift uint
		switch t {
		case elf.R_AARCH64_MOVW_UABS_G1, elf.R_AARCH64_MOVW_UABS_G1_NC:
			shift = 16
		case elf.R_AARCH64_MOVW_UABS_G2, elf.R_AARCH64_MOVW_UABS_G2_NC:
			shift = 32
		case elf.R_AARCH64_MOVW_UABS_G3:
			shift = 48
		}
		checked := t == elf.R_AARCH64_MOVW_UABS_G0 || t == elf.R_AARCH64_MOVW_UABS_G1 || t == elf.R_AARCH64_MOVW_UABS_G2
		if checked && v>>shift >= 1<<16 {
			return fmt.Errorf("value %#x: %w", v, ErrOutOfRange)
		}
		return put(insn&^(0xffff<<5) | uint32(v>>shift&0xffff)<<5)
	case elf.R_AARCH64_ADR_GOT_PAGE, elf.R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21:
		return adr(pageDelta(G+A, P), true)
	case elf.R_AARCH64_LD64_GOT_LO12_NC, elf.R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC:
		return imm12(uint64(G+A), 3)
	case elf.R_AARCH64_LD64_GOTPAGE_LO15:
		v := G + A - int64(r.GOT&^0xfff)
		if v < 0 || v >= 1<<15 || v&7 != 0 {
			return fmt.Errorf("GOT offset %#x: %w", v, ErrOutOfRange)
		}
		return put(insn&^(0xfff<<10) | uint32(v>>3)<<10)
	case elf.R_AARCH64_TLSIE_LD_GOTTPREL_PREL19:
		return branch(G+A-P, 19, 5)
	case elf.R_AARCH64_TLSLE_ADD_TPREL_HI12:
		if tp < 0 || tp >= 1<<24 {
			return fmt.Errorf("TP offset %#x: %w", tp, ErrOutOfRange)
		}
		return put(insn&^(0xfff<<10) | uint32(tp>>12&0xfff)<<10)
	case elf.R_AARCH64_TLSLE_ADD_TPREL_LO12, elf.R_AARCH64_TLSLE_ADD_TPREL_LO12_NC:
		if t == elf.R_AARCH64_TLSLE_ADD_TPREL_LO12 && (tp < 0 || tp >= 1<<12) {
			return fmt.Errorf("TP offset %#x: %w", tp, ErrOutOfRange)
		}
		return imm12(uint64(tp), 0)
	case rTLSLELDST8, rTLSLELDST8NC,
		rTLSLELDST16, rTLSLELDST16NC,
		rTLSLELDST32, rTLSLELDST32NC,
		rTLSLELDST64, rTLSLELDST64NC,
		rTLSLELDST128, rTLSLELDST128NC:
		var shift uint
		checked := true
		switch t {
		case rTLSLELDST8NC:
			checked = false
		case rTLSLELDST16, rTLSLELDST16NC:
			shift, checked = 1, t == rTLSLELDST16
		case rTLSLELDST32, rTLSLELDST32NC:
			shift, checked = 2, t == rTLSLELDST32
		case rTLSLELDST64, rTLSLELDST64NC:
			shift, checked = 3, t == rTLSLELDST64
		case rTLSLELDST128, rTLSLELDST128NC:
			shift, checked = 4, t == rTLSLELDST128
		}
		if checked && (tp < 0 || tp >= 1<<12) {
			return fmt.Errorf("TP offset %#x: %w", tp, ErrOutOfRange)
		}
		return imm12(uint64(tp), shift)
	case elf.R_AARCH64_TLSLE_MOVW_TPREL_G2:
		return movw(tp, 32, true, true)
	case elf.R_AARCH64_TLSLE_MOVW_TPREL_G1:
		return movw(tp, 16, true, true)
	case elf.R_AARCH64_TLSLE_MOVW_TPREL_G1_NC:
		return movw(tp, 16, false, false)
	case elf.R_AARCH64_TLSLE_MOVW_TPREL_G0:
		return movw(tp, 0, true, true)
	case elf.R_AARCH64_TLSLE_MOVW_TPREL_G0_NC:
		return movw(tp, 0, false, false)

	// Descriptor and traditional general-dynamic sequences become
	// local-exec, as a static linker relaxes them for an executable: the
	// variable is in the executable's static block, so its offset from
	// the thread pointer is a constant. x0 ends up holding that offset,
	// which is what the descriptor call would have returned.
	case elf.R_AARCH64_TLSDESC_ADR_PAGE21, elf.R_AARCH64_TLSGD_ADR_PAGE21:
		if insn&0x9f00001f != 0x90000000 { // adrp x0
			return tlsSeqErr(t, insn)
		}
		if tp < 0 || tp >= 1<<32 {
			return fmt.Errorf("TP offset %#x: %w", tp, ErrOutOfRange)
		}
		return put(a64MOVZX0 | 1<<21 | uint32(tp>>16&0xffff)<<5) // movz x0, #hi, lsl #16
	case elf.R_AARCH64_TLSDESC_LD64_LO12_NC:
		if insn&0xffc003e0 != 0xf9400000 { // ldr xN, [x0, #imm]
			return tlsSeqErr(t, insn)
		}
		return put(a64MOVKX0 | uint32(tp&0xffff)<<5) // movk x0, #lo
	case elf.R_AARCH64_TLSDESC_ADD_LO12_NC:
		if insn&0xffc003ff != 0x91000000 { // add x0, x0, #imm
			return tlsSeqErr(t, insn)
		}
		return put(a64NOP)
	case elf.R_AARCH64_TLSDESC_CALL:
		if insn&0xfffffc1f != 0xd63f0000 { // blr xN
			return tlsSeqErr(t, insn)
		}
		return put(a64NOP)
	case elf.R_AARCH64_TLSGD_ADD_LO12_NC:
		if off+12 > uint64(len(d)) || insn&0xffc003ff != 0x91000000 ||
			le32(d[off+4:])&0xfc000000 != 0x94000000 || le32(d[off+8:]) != a64NOP {
			return fmt.Errorf("unrecognised general-dynamic TLS sequence (add, bl __tls_get_addr, nop expected): %w", ErrUnsupportedReloc)
		}
		put32le(d[off+4:], a64MRSTPX1)
		put32le(d[off+8:], a64ADDX0X1)
		return put(a64MOVKX0 | uint32(tp&0xffff)<<5)
	}
	return fmt.Errorf("type %d: %w", r.Type, ErrUnsupportedReloc)
}

func tlsSeqErr(t elf.R_AARCH64, insn uint32) error {
	return fmt.Errorf("%v on unexpected instruction %#08x (a TLS sequence hotpatch does not know): %w", t, insn, ErrUnsupportedReloc)
}
