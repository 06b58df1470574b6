package arch

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/arch/arm64/arm64asm"
)

// a64Insts decodes code as AArch64 instructions and fails on any word that
// does not decode.
func a64Insts(t *testing.T, code []byte) []arm64asm.Inst {
	t.Helper()
	if len(code)%4 != 0 {
		t.Fatalf("code is %d bytes, not whole instructions", len(code))
	}
	var out []arm64asm.Inst
	for off := 0; off < len(code); off += 4 {
		inst, err := arm64asm.Decode(code[off:])
		if err != nil {
			t.Fatalf("decode %08x at +%d: %v", le32(code[off:]), off, err)
		}
		out = append(out, inst)
	}
	return out
}

// a64Target is where a decoded PC-relative instruction at pc refers to.
func a64Target(t *testing.T, inst arm64asm.Inst, pc uint64) uint64 {
	t.Helper()
	for _, a := range inst.Args {
		if rel, ok := a.(arm64asm.PCRel); ok {
			if inst.Op == arm64asm.ADRP {
				return pc&^0xfff + uint64(rel)
			}
			return pc + uint64(rel)
		}
	}
	t.Fatalf("%v has no PC-relative operand", inst)
	return 0
}

// a64MemImm is the immediate offset of a [Xn,#imm] operand.
func a64MemImm(t *testing.T, inst arm64asm.Inst) int64 {
	t.Helper()
	for _, a := range inst.Args {
		if m, ok := a.(arm64asm.MemImmediate); ok {
			s := m.String()
			i := strings.IndexByte(s, '#')
			if i < 0 {
				return 0
			}
			var v int64
			if _, err := fmt.Sscanf(strings.TrimSuffix(s[i+1:], "]"), "%v", &v); err != nil {
				t.Fatalf("operand %s: %v", s, err)
			}
			return v
		}
	}
	t.Fatalf("%v has no memory operand", inst)
	return 0
}

func TestARM64ShortJump(t *testing.T) {
	for _, c := range []struct{ from, to uint64 }{
		{0x400000, 0x400100}, {0x400100, 0x400000}, {0x5555_0000_0000, 0x5555_07ff_fffc}, {0x1000_0000, 0x1000_0000 - 1<<27},
	} {
		code, ok := ARM64.EncodeShortJump(c.from, c.to)
		if !ok || len(code) != ARM64.ShortJumpLen {
			t.Fatalf("%#x->%#x not encoded", c.from, c.to)
		}
		inst := a64Insts(t, code)[0]
		if inst.Op != arm64asm.B || a64Target(t, inst, c.from) != c.to {
			t.Errorf("%#x->%#x decodes to %v", c.from, c.to, inst)
		}
	}
	for _, to := range []uint64{0x1000_0000 + 1<<27, 0x1000_0000 - 1<<27 - 4, 0x1000_0002} {
		if _, ok := ARM64.EncodeShortJump(0x1000_0000, to); ok {
			t.Errorf("jump to %#x must not be encoded short", to)
		}
	}
}

func TestARM64LongJump(t *testing.T) {
	code := ARM64.EncodeLongJump(0x400000, 0x7f00_1122_3344)
	if len(code) != ARM64.LongJumpLen {
		t.Fatalf("long jump is %d bytes", len(code))
	}
	insts := a64Insts(t, code[:8])
	if insts[0].Op != arm64asm.LDR || insts[0].Args[0] != arm64asm.X16 || a64Target(t, insts[0], 0x400000) != 0x400008 {
		t.Errorf("first instruction %v", insts[0])
	}
	if insts[1].Op != arm64asm.BR || insts[1].Args[0] != arm64asm.X16 {
		t.Errorf("second instruction %v", insts[1])
	}
	if got := binary.LittleEndian.Uint64(code[8:]); got != 0x7f00_1122_3344 {
		t.Errorf("literal %#x", got)
	}
}

func TestARM64Stub(t *testing.T) {
	const from, slot = 0x7f00_0000_1000, 0x7f00_0003_4ff8
	code, err := ARM64.EncodeStub(from, slot)
	if err != nil || len(code) != ARM64.StubLen {
		t.Fatalf("stub: %v, %d bytes", err, len(code))
	}
	insts := a64Insts(t, code)
	if insts[0].Op != arm64asm.ADRP || insts[0].Args[0] != arm64asm.X16 || a64Target(t, insts[0], from) != slot&^0xfff {
		t.Errorf("adrp: %v", insts[0])
	}
	if insts[1].Op != arm64asm.LDR || insts[1].Args[0] != arm64asm.X16 || a64MemImm(t, insts[1]) != slot&0xfff {
		t.Errorf("ldr: %v", insts[1])
	}
	if insts[2].Op != arm64asm.BR || insts[2].Args[0] != arm64asm.X16 || insts[3].Op != arm64asm.BRK {
		t.Errorf("br, brk: %v %v", insts[2], insts[3])
	}
	if _, err := ARM64.EncodeStub(from, from+1<<33); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("slot 8 GiB away: %v", err)
	}
}

func TestARM64GateCheck(t *testing.T) {
	const at, gate, target = 0x7f00_0000_2010, 0x7f00_0000_00f8, 0x7f00_0000_4000
	code, err := ARM64.EncodeGateCheck(at, gate, target)
	if err != nil || len(code) != ARM64.GateCheckLen {
		t.Fatalf("gate check: %v, %d bytes", err, len(code))
	}
	insts := a64Insts(t, code)
	if insts[0].Op != arm64asm.ADRP || insts[0].Args[0] != arm64asm.X16 || a64Target(t, insts[0], at) != gate&^0xfff {
		t.Errorf("adrp: %v", insts[0])
	}
	if insts[1].Op != arm64asm.LDRB || insts[1].Args[0] != arm64asm.W16 || a64MemImm(t, insts[1]) != gate&0xfff {
		t.Errorf("ldrb: %v", insts[1])
	}
	if insts[2].Op != arm64asm.CBZ || insts[2].Args[0] != arm64asm.W16 || a64Target(t, insts[2], at+8) != at+16 {
		t.Errorf("cbz: %v", insts[2])
	}
	if insts[3].Op != arm64asm.B || a64Target(t, insts[3], at+12) != target {
		t.Errorf("b: %v", insts[3])
	}
}

func TestARM64KeepEntry(t *testing.T) {
	for _, c := range []struct {
		w    uint32
		keep int
		undo arm64asm.Op
	}{
		{a64PACIASP, 4, arm64asm.HINT},
		{a64PACIBSP, 4, arm64asm.HINT},
		{0xd503245f, 4, 0}, // bti c
		{0xd50324df, 4, 0}, // bti jc
		{0xa9bf7bfd, 0, 0}, // stp x29, x30, [sp, #-16]!
		{a64NOP, 0, 0},
	} {
		keep, undo := ARM64.KeepEntry(words(c.w, a64NOP))
		if keep != c.keep || (c.undo == 0) != (undo == nil) {
			t.Errorf("%08x: keep %d undo % x", c.w, keep, undo)
			continue
		}
		if undo != nil {
			want := map[uint32]uint32{a64PACIASP: a64AUTIASP, a64PACIBSP: a64AUTIBSP}[c.w]
			if le32(undo) != want || a64Insts(t, undo)[0].Op != c.undo {
				t.Errorf("%08x: undo %08x, want %08x", c.w, le32(undo), want)
			}
		}
	}
}

func TestARM64Displace(t *testing.T) {
	const addr = 0x40_1000
	near := uint64(0x40_9000)         // within every branch's reach of the copy
	far := uint64(0x7f00_0000_0000)   // beyond ±128 MiB: only ADRP reaches
	mid := uint64(addr + 0xc000_0000) // within ±4 GiB but beyond ±128 MiB
	for _, c := range []struct {
		name    string
		code    []uint32
		n       int
		to      uint64
		covered int
		falls   bool
		grows   bool // the copy is longer than the original
		refused bool
	}{
		{"prologue", []uint32{0xa9bf7bfd, 0x910003fd, 0xf9000bf3, 0x2a0003f3}, 16, near, 16, true, false, false},
		{"ret", []uint32{0x11000400, 0xd65f03c0, a64NOP, a64NOP}, 16, near, 8, false, false, false},
		{"b.ne near", []uint32{0x54000081}, 4, near, 4, true, false, false},
		{"b.ne far", []uint32{0x54000081}, 4, addr + 64<<20, 4, true, true, false},
		{"b.al far", []uint32{0x5400008e}, 4, addr + 64<<20, 4, true, false, false},
		{"cbz far", []uint32{0x34000100}, 4, addr + 64<<20, 4, true, true, false},
		{"cbnz x far", []uint32{0xb5000100}, 4, addr + 64<<20, 4, true, true, false},
		{"tbz far", []uint32{0x36180100}, 4, addr + 64<<20, 4, true, true, false},
		{"tbnz far", []uint32{0x37180100}, 4, addr + 64<<20, 4, true, true, false},
		{"adr near", []uint32{0x10000100}, 4, near, 4, true, false, false},
		{"adr mid", []uint32{0x10000100}, 4, mid, 4, true, true, false},
		{"adrp mid", []uint32{0x90000100}, 4, mid, 4, true, false, false},
		{"ldr x literal mid", []uint32{0x58000101}, 4, mid, 4, true, true, false},
		{"ldr w literal mid", []uint32{0x18000101}, 4, mid, 4, true, true, false},
		{"ldrsw literal mid", []uint32{0x98000101}, 4, mid, 4, true, true, false},
		{"bl near", []uint32{0x94000100}, 4, near, 4, true, false, false},
		{"b near", []uint32{0x14000100}, 4, near, 4, false, false, false},
		{"stacked long jump", []uint32{a64LDRX16P8, a64BRX16, 0x1234, 0}, 4, mid, 4, true, true, false},
		{"bl far", []uint32{0x94000100}, 4, far, 0, false, false, true},
		{"adrp far", []uint32{0x90000100}, 4, far, 0, false, false, true},
		{"ldr d literal mid", []uint32{0x5c000101}, 4, mid, 0, false, false, true},
		{"short function", []uint32{0xd65f03c0}, 16, near, 4, false, false, false},
		{"ends inside", []uint32{0x11000400}, 16, near, 0, false, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			code := words(c.code...)
			out, covered, falls, err := ARM64.Displace(code, addr, c.n, c.to)
			if c.refused {
				if !errors.Is(err, ErrCannotDisplace) {
					t.Fatalf("want ErrCannotDisplace, got %v (% x)", err, out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if covered != c.covered || falls != c.falls {
				t.Fatalf("covered %d falls %v, want %d %v", covered, falls, c.covered, c.falls)
			}
			if grows := len(out) > covered; grows != c.grows {
				t.Errorf("copy is %d bytes for %d", len(out), covered)
			}
			a64SameMeaning(t, code[:covered], addr, out, c.to)
		})
	}
}

// a64SameMeaning checks that moved, running at to, does what orig does at
// addr: same operations, same registers, and the same addresses for every
// PC-relative operand. A longer form is followed through: an inverted
// conditional branch over a B, or ADRP+ADD(+LDR) for ADR and literals.
func a64SameMeaning(t *testing.T, orig []byte, addr uint64, moved []byte, to uint64) {
	t.Helper()
	oi, mi := a64Insts(t, orig), a64Insts(t, moved)
	pc := to
	j := 0
	for i, o := range oi {
		opc := addr + uint64(4*i)
		if j >= len(mi) {
			t.Fatalf("copy ends before %v", o)
		}
		m := mi[j]
		kind, target := a64Decode(le32(orig[4*i:]), opc)
		switch {
		case kind == a64None:
			if m.Enc != o.Enc {
				t.Errorf("%v became %v", o, m)
			}
		case m.Op == o.Op && (kind == a64B || kind == a64BL || m.Args[0] == o.Args[0] && (kind != a64TB || m.Args[1] == o.Args[1])):
			// Re-aimed in place.
			if got := a64Target(t, m, pc); got != target && !(kind == a64ADRP && got == target&^0xfff) {
				t.Errorf("%v at %#x refers to %#x; moved %v refers to %#x", o, opc, target, m, got)
			}
		case kind == a64Bcond && o.Args[0].(arm64asm.Cond).Value&0xe == 0xe && m.Op == arm64asm.B:
			if got := a64Target(t, m, pc); got != target {
				t.Errorf("b.al became %v to %#x, want %#x", m, got, target)
			}
		case kind == a64Bcond || kind == a64CB || kind == a64TB:
			// Inverted test skipping one B.
			if j+1 >= len(mi) || mi[j+1].Op != arm64asm.B || a64Target(t, m, pc) != pc+8 {
				t.Fatalf("%v became %v and %v", o, m, mi[j+1:])
			}
			if got := a64Target(t, mi[j+1], pc+4); got != target {
				t.Errorf("%v goes to %#x, moved B to %#x", o, target, got)
			}
			if a64Inverse(le32(orig[4*i:])) != le32(moved[4*j:])&^(0x7ffff<<5)&^(0x3fff<<5) {
				t.Errorf("%v is not the inverse of %v", m, o)
			}
			j++
			pc += 4
		case kind == a64ADR || kind == a64LDRLit:
			if m.Op != arm64asm.ADRP || j+1 >= len(mi) || mi[j+1].Op != arm64asm.ADD {
				t.Fatalf("%v became %v", o, mi[j:])
			}
			page := a64Target(t, m, pc)
			lo := uint64(le32(moved[4*(j+1):]) >> 10 & 0xfff)
			if page+lo != target || le32(moved[4*j:])&31 != le32(orig[4*i:])&31 || le32(moved[4*(j+1):])&31 != le32(orig[4*i:])&31 {
				t.Errorf("%v refers to %#x, moved to %#x", o, target, page+lo)
			}
			j++
			pc += 4
			if kind == a64LDRLit {
				j++
				pc += 4
				ld := mi[j]
				want := map[uint32]arm64asm.Op{0: arm64asm.LDR, 1: arm64asm.LDR, 2: arm64asm.LDRSW}[le32(orig[4*i:])>>30]
				if ld.Op != want || ld.Args[0] != o.Args[0] || a64MemImm(t, ld) != 0 {
					t.Errorf("%v became load %v", o, ld)
				}
			}
		default:
			t.Errorf("%v became %v", o, m)
		}
		j++
		pc += 4
	}
	if j != len(mi) {
		t.Errorf("copy has %d extra instructions: %v", len(mi)-j, mi[j:])
	}
}

// a64Inverse inverts a conditional branch's test and clears its offset.
func a64Inverse(w uint32) uint32 {
	if w&0xff000000 == 0x54000000 {
		return w&^(0x7ffff<<5) ^ 1
	}
	return w&^(0x7ffff<<5)&^(0x3fff<<5) ^ 1<<24
}

func TestARM64BranchesInto(t *testing.T) {
	// bti c; mov w1, #0; (loop:) add w1, w1, w0; subs w0, w0, #1; b.ne loop; mov w0, w1; ret
	code := words(0xd503245f, 0x52800001, 0x0b000021, 0x71000400, 0x54ffffc1, 0x2a0103e0, 0xd65f03c0)
	const addr = 0x1000
	if !ARM64.BranchesInto(code, addr, addr+4, addr+20) {
		t.Error("loop head at +8 not found inside (+4, +20)")
	}
	if ARM64.BranchesInto(code, addr, addr+4, addr+8) {
		t.Error("nothing branches into (+4, +8)")
	}
	if ARM64.BranchesInto(code, addr, addr+8, addr+12) {
		t.Error("a branch to the jump itself is not into it")
	}
}

func TestARM64TLSBlockOffset(t *testing.T) {
	for _, c := range []struct {
		vaddr, align uint64
		want         int64
	}{
		{0x10db8, 8, 16}, {0x10dc0, 16, 16}, {0x1f000, 32, 32}, {0x1f000, 64, 64}, {0x1f010, 64, 16}, {0x1f030, 64, 48}, {0x1f000, 1, 16},
	} {
		if got := ARM64.TLSBlockOffset(c.vaddr, 0x40, c.align); got != c.want {
			t.Errorf("vaddr %#x align %d: offset %d, want %d", c.vaddr, c.align, got, c.want)
		}
	}
	// x86-64 is unchanged: the block ends at the thread pointer.
	if got := AMD64.TLSBlockOffset(0x3de0, 4, 4); got != -4 {
		t.Errorf("amd64: %d", got)
	}
}

// relocCase applies one relocation to a one-instruction (or data) field.
type relocCase struct {
	name  string
	typ   elf.R_AARCH64
	insn  []uint32
	P, S  uint64
	A     int64
	G, L  uint64
	TPOff int64
	check func(t *testing.T, out []byte, c relocCase)
	err   error
}

func TestARM64Relocations(t *testing.T) {
	var P uint64 = 0x7f00_0010_0000
	target := func(op arm64asm.Op, want uint64) func(*testing.T, []byte, relocCase) {
		return func(t *testing.T, out []byte, c relocCase) {
			inst := a64Insts(t, out[:4])[0]
			if inst.Op != op || a64Target(t, inst, c.P) != want {
				t.Errorf("%v refers to %#x, want %v to %#x", inst, a64Target(t, inst, c.P), op, want)
			}
		}
	}
	imm := func(op arm64asm.Op, want int64) func(*testing.T, []byte, relocCase) {
		return func(t *testing.T, out []byte, c relocCase) {
			inst := a64Insts(t, out[:4])[0]
			var got int64
			if op == arm64asm.ADD {
				got = int64(le32(out) >> 10 & 0xfff)
				if le32(out)&(1<<22) != 0 {
					got <<= 12
				}
			} else {
				got = a64MemImm(t, inst)
			}
			if inst.Op != op || got != want {
				t.Errorf("%v: immediate %#x, want %v with %#x", inst, got, op, want)
			}
		}
	}
	data := func(size int, want uint64) func(*testing.T, []byte, relocCase) {
		return func(t *testing.T, out []byte, c relocCase) {
			var got uint64
			switch size {
			case 4:
				got = uint64(binary.LittleEndian.Uint32(out))
			case 8:
				got = binary.LittleEndian.Uint64(out)
			}
			if got != want {
				t.Errorf("field %#x, want %#x", got, want)
			}
		}
	}
	seq := func(want ...string) func(*testing.T, []byte, relocCase) {
		return func(t *testing.T, out []byte, c relocCase) {
			insts := a64Insts(t, out)
			for i, w := range want {
				if got := strings.TrimSpace(insts[i].String()); got != w {
					t.Errorf("instruction %d is %q, want %q", i, got, w)
				}
			}
		}
	}
	cases := []relocCase{
		{name: "call26", typ: elf.R_AARCH64_CALL26, insn: []uint32{0x94000000}, P: P, S: P - 0x10_0000, check: target(arm64asm.BL, P-0x10_0000)},
		{name: "call26 veneer", typ: elf.R_AARCH64_CALL26, insn: []uint32{0x94000000}, P: P, S: 0x5555_0000_0000, L: P + 0x8000, check: target(arm64asm.BL, P+0x8000)},
		{name: "call26 near with veneer", typ: elf.R_AARCH64_CALL26, insn: []uint32{0x94000000}, P: P, S: P + 0x40, L: P + 0x8000, check: target(arm64asm.BL, P+0x40)},
		{name: "call26 out of range", typ: elf.R_AARCH64_CALL26, insn: []uint32{0x94000000}, P: P, S: P + 1<<27, err: ErrOutOfRange},
		{name: "jump26", typ: elf.R_AARCH64_JUMP26, insn: []uint32{0x14000000}, P: P, S: P + 0x7ff_fffc, check: target(arm64asm.B, P+0x7ff_fffc)},
		{name: "condbr19", typ: elf.R_AARCH64_CONDBR19, insn: []uint32{0x54000001}, P: P, S: P - 0x40, check: target(arm64asm.B, P-0x40)},
		{name: "condbr19 range", typ: elf.R_AARCH64_CONDBR19, insn: []uint32{0x54000001}, P: P, S: P + 1<<20, err: ErrOutOfRange},
		{name: "tstbr14", typ: elf.R_AARCH64_TSTBR14, insn: []uint32{0x36180000}, P: P, S: P + 0x1ffc, check: target(arm64asm.TBZ, P+0x1ffc)},
		{name: "adr_prel_pg_hi21", typ: elf.R_AARCH64_ADR_PREL_PG_HI21, insn: []uint32{0x90000000}, P: P + 0x123, S: P - 0x8000_0000 + 0x456, A: 8, check: target(arm64asm.ADRP, (P-0x8000_0000)&^0xfff)},
		{name: "adr_prel_pg_hi21 range", typ: elf.R_AARCH64_ADR_PREL_PG_HI21, insn: []uint32{0x90000000}, P: P, S: P + 1<<32, err: ErrOutOfRange},
		{name: "adr_prel_lo21", typ: elf.R_AARCH64_ADR_PREL_LO21, insn: []uint32{0x10000000}, P: P, S: P + 0xf_fff0, A: 3, check: target(arm64asm.ADR, P+0xf_fff3)},
		{name: "add_abs_lo12_nc", typ: elf.R_AARCH64_ADD_ABS_LO12_NC, insn: []uint32{0x91000000}, P: P, S: 0x4123_4567, A: 1, check: imm(arm64asm.ADD, 0x568)},
		{name: "ldst8", typ: elf.R_AARCH64_LDST8_ABS_LO12_NC, insn: []uint32{0x39400000}, P: P, S: 0x4123_4567, check: imm(arm64asm.LDRB, 0x567)},
		{name: "ldst16", typ: elf.R_AARCH64_LDST16_ABS_LO12_NC, insn: []uint32{0x79400000}, P: P, S: 0x4123_4566, check: imm(arm64asm.LDRH, 0x566)},
		{name: "ldst32", typ: elf.R_AARCH64_LDST32_ABS_LO12_NC, insn: []uint32{0xb9400000}, P: P, S: 0x4123_4564, check: imm(arm64asm.LDR, 0x564)},
		{name: "ldst64", typ: elf.R_AARCH64_LDST64_ABS_LO12_NC, insn: []uint32{0xf9400000}, P: P, S: 0x4123_4568, check: imm(arm64asm.LDR, 0x568)},
		{name: "ldst128", typ: elf.R_AARCH64_LDST128_ABS_LO12_NC, insn: []uint32{0x3dc00000}, P: P, S: 0x4123_4570, check: imm(arm64asm.LDR, 0x570)},
		{name: "ldst64 misaligned", typ: elf.R_AARCH64_LDST64_ABS_LO12_NC, insn: []uint32{0xf9400000}, P: P, S: 0x4123_4564, err: ErrOutOfRange},
		{name: "adr_got_page", typ: elf.R_AARCH64_ADR_GOT_PAGE, insn: []uint32{0x90000000}, P: P, S: 0x1234, G: P + 0x2_3008, check: target(arm64asm.ADRP, P+0x2_3000)},
		{name: "ld64_got_lo12_nc", typ: elf.R_AARCH64_LD64_GOT_LO12_NC, insn: []uint32{0xf9400000}, P: P, S: 0x1234, G: P + 0x2_3ff8, check: imm(arm64asm.LDR, 0xff8)},
		{name: "ld_prel_lo19", typ: elf.R_AARCH64_LD_PREL_LO19, insn: []uint32{0x58000000}, P: P, S: P - 0xf_fffc, check: target(arm64asm.LDR, P-0xf_fffc)},
		{name: "abs64", typ: elf.R_AARCH64_ABS64, insn: []uint32{0, 0}, P: P, S: 0x7f01_0203_0405, A: 3, check: data(8, 0x7f01_0203_0408)},
		{name: "abs32", typ: elf.R_AARCH64_ABS32, insn: []uint32{0}, P: P, S: 0x40_0000, A: 3, check: data(4, 0x40_0003)},
		{name: "abs32 range", typ: elf.R_AARCH64_ABS32, insn: []uint32{0}, P: P, S: 1 << 32, err: ErrOutOfRange},
		{name: "prel32", typ: elf.R_AARCH64_PREL32, insn: []uint32{0}, P: P, S: P - 0x100, check: data(4, uint64(uint32(0xffff_ff00)))},
		{name: "prel64", typ: elf.R_AARCH64_PREL64, insn: []uint32{0, 0}, P: P, S: 0x40_0000, check: data(8, 0x40_0000-P)},
		{name: "gottprel page", typ: elf.R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21, insn: []uint32{0x90000000}, P: P, G: P + 0x5010, check: target(arm64asm.ADRP, P+0x5000)},
		{name: "gottprel lo12", typ: elf.R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC, insn: []uint32{0xf9400000}, P: P, G: P + 0x5010, check: imm(arm64asm.LDR, 0x10)},
		{name: "tprel hi12", typ: elf.R_AARCH64_TLSLE_ADD_TPREL_HI12, insn: []uint32{0x91400000}, P: P, TPOff: 0x12_3458, check: imm(arm64asm.ADD, 0x12_3000)},
		{name: "tprel lo12_nc", typ: elf.R_AARCH64_TLSLE_ADD_TPREL_LO12_NC, insn: []uint32{0x91000000}, P: P, TPOff: 0x12_3458, check: imm(arm64asm.ADD, 0x458)},
		{name: "tprel lo12 range", typ: elf.R_AARCH64_TLSLE_ADD_TPREL_LO12, insn: []uint32{0x91000000}, P: P, TPOff: 0x1000, err: ErrOutOfRange},
		{name: "tprel ldst32", typ: rTLSLELDST32NC, insn: []uint32{0xb9400000}, P: P, TPOff: 0x1018, check: imm(arm64asm.LDR, 0x18)},
		{name: "tprel movw g1", typ: elf.R_AARCH64_TLSLE_MOVW_TPREL_G1, insn: []uint32{0x92a00000}, P: P, TPOff: 0x1_0020, check: seq("MOV X0, #0x10000")},
		{name: "tprel movw g0_nc", typ: elf.R_AARCH64_TLSLE_MOVW_TPREL_G0_NC, insn: []uint32{0xf2800000}, P: P, TPOff: 0x1_0020, check: seq("MOVK X0, #0x20")},
		// adrp x0, :tlsdesc:x; ldr x1, [x0, #:tlsdesc_lo12:x]; add x0, x0, #:tlsdesc_lo12:x; blr x1
		{name: "tlsdesc adrp", typ: elf.R_AARCH64_TLSDESC_ADR_PAGE21, insn: []uint32{0x90000000}, P: P, TPOff: 0x2_0010, check: seq("MOV X0, #0x20000")},
		{name: "tlsdesc ldr", typ: elf.R_AARCH64_TLSDESC_LD64_LO12_NC, insn: []uint32{0xf9400001}, P: P, TPOff: 0x2_0010, check: seq("MOVK X0, #0x10")},
		{name: "tlsdesc add", typ: elf.R_AARCH64_TLSDESC_ADD_LO12_NC, insn: []uint32{0x91000000}, P: P, TPOff: 0x2_0010, check: seq("NOP")},
		{name: "tlsdesc call", typ: elf.R_AARCH64_TLSDESC_CALL, insn: []uint32{0xd63f0020}, P: P, TPOff: 0x2_0010, check: seq("NOP")},
		{name: "tlsdesc wrong register", typ: elf.R_AARCH64_TLSDESC_ADR_PAGE21, insn: []uint32{0x90000001}, P: P, err: ErrUnsupportedReloc},
		// adrp x0, :tlsgd:x; add x0, x0, :tlsgd_lo12:x; bl __tls_get_addr; nop
		{name: "tlsgd add", typ: elf.R_AARCH64_TLSGD_ADD_LO12_NC, insn: []uint32{0x91000000, 0x94000000, a64NOP}, P: P, TPOff: 0x10,
			check: seq("MOVK X0, #0x10", "MRS X1, S3_3_C13_C0_2", "ADD X0, X0, X1")},
		{name: "tlsgd no call", typ: elf.R_AARCH64_TLSGD_ADD_LO12_NC, insn: []uint32{0x91000000, a64NOP, a64NOP}, P: P, err: ErrUnsupportedReloc},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, ok := ARM64.Relocs[uint32(c.typ)]; !ok {
				t.Fatalf("%v is not in the table", c.typ)
			}
			buf := words(c.insn...)
			err := ARM64.Apply(&Reloc{Type: uint32(c.typ), Data: buf, P: c.P, S: c.S, A: c.A, G: c.G, L: c.L, TPOff: c.TPOff})
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("want %v, got %v", c.err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, buf, c)
		})
	}
}

func TestARM64TLSSequenceLen(t *testing.T) {
	if ARM64.TLSSequence(uint32(elf.R_AARCH64_TLSGD_ADD_LO12_NC)) != 12 || ARM64.TLSSequence(uint32(elf.R_AARCH64_TLSDESC_CALL)) != 0 {
		t.Error("only the traditional general-dynamic ADD consumes the call after it")
	}
}

func TestArchLookup(t *testing.T) {
	for _, c := range []struct {
		m    elf.Machine
		name string
		want *Arch
	}{{elf.EM_X86_64, "amd64", AMD64}, {elf.EM_AARCH64, "arm64", ARM64}} {
		if a, err := ForMachine(c.m); a != c.want || err != nil {
			t.Errorf("ForMachine(%v) = %v, %v", c.m, a, err)
		}
		if a, err := ForName(c.name); a != c.want || err != nil {
			t.Errorf("ForName(%s) = %v, %v", c.name, a, err)
		}
	}
	if _, err := ForMachine(elf.EM_RISCV); !errors.Is(err, ErrNotSupported) {
		t.Errorf("riscv: %v", err)
	}
}

// An earlier patch's long jump loads its target from the literal after it;
// a new long jump over it overwrites that literal, so the copy would load
// the new jump's target and loop.
func TestARM64DisplaceReadsOverwrittenBytes(t *testing.T) {
	const addr = 0x40_1000
	stacked := words(a64LDRX16P8, a64BRX16, 0x1234, 0)
	if _, _, _, err := ARM64.Displace(stacked, addr, 16, addr+0x1000); !errors.Is(err, ErrCannotDisplace) {
		t.Errorf("long jump over a long jump: want ErrCannotDisplace, got %v", err)
	}
	// ldr w1, #12 reads the word at +12, inside a 16-byte jump; #16 is past it.
	if _, _, _, err := ARM64.Displace(words(0x18000061, a64NOP, a64NOP, a64NOP), addr, 16, addr+0x1000); !errors.Is(err, ErrCannotDisplace) {
		t.Errorf("literal inside the jump: want ErrCannotDisplace, got %v", err)
	}
	if _, _, _, err := ARM64.Displace(words(0x18000081, a64NOP, a64NOP, a64NOP), addr, 16, addr+0x1000); err != nil {
		t.Errorf("literal after the jump: %v", err)
	}
}

// A 16-bit data field may end its section: only its own two bytes must exist.
func TestARM64Data16AtSectionEnd(t *testing.T) {
	for _, c := range []struct {
		typ  elf.R_AARCH64
		S    uint64
		P    uint64
		want uint16
	}{
		{elf.R_AARCH64_ABS16, 0x1234, 0x40_0000, 0x1236},
		{elf.R_AARCH64_PREL16, 0x40_0100, 0x40_0000, 0x102},
	} {
		buf := []byte{0xaa, 0xbb, 0xcc, 0xdd, 0, 0}
		if err := ARM64.Apply(&Reloc{Type: uint32(c.typ), Data: buf, Offset: 4, P: c.P, S: c.S, A: 2}); err != nil {
			t.Errorf("%v: %v", c.typ, err)
			continue
		}
		if got := binary.LittleEndian.Uint16(buf[4:]); got != c.want || buf[3] != 0xdd {
			t.Errorf("%v: field %#x, want %#x (% x)", c.typ, got, c.want, buf)
		}
	}
	// An instruction field still needs four bytes.
	if err := ARM64.Apply(&Reloc{Type: uint32(elf.R_AARCH64_CALL26), Data: make([]byte, 6), Offset: 4, P: 0x1000, S: 0x1000}); err == nil {
		t.Error("CALL26 with two bytes left must fail")
	}
}
