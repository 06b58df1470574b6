package arch

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// decodeAll decodes code completely and fails on any undecodable byte.
func decodeAll(t *testing.T, code []byte) []x86asm.Inst {
	t.Helper()
	var out []x86asm.Inst
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			t.Fatalf("decode % x at %d: %v", code, off, err)
		}
		out = append(out, inst)
		off += inst.Len
	}
	return out
}

// target computes where a decoded relative branch at addr goes.
func branchTarget(t *testing.T, inst x86asm.Inst, addr uint64) uint64 {
	t.Helper()
	rel, ok := inst.Args[0].(x86asm.Rel)
	if !ok {
		t.Fatalf("%v has no relative target", inst)
	}
	return uint64(int64(addr) + int64(inst.Len) + int64(rel))
}

func TestShortJumpRoundTrip(t *testing.T) {
	for _, c := range []struct{ from, to uint64 }{
		{0x1000, 0x2000}, {0x7fff0000, 0x10000}, {0x555500001000, 0x5554c0000000},
	} {
		code, ok := AMD64.EncodeShortJump(c.from, c.to)
		if !ok || len(code) != AMD64.ShortJumpLen {
			t.Fatalf("short jump %#x->%#x not encoded", c.from, c.to)
		}
		insts := decodeAll(t, code)
		if len(insts) != 1 || insts[0].Op != x86asm.JMP || branchTarget(t, insts[0], c.from) != c.to {
			t.Errorf("%#x->%#x decodes to %v", c.from, c.to, insts)
		}
	}
	if _, ok := AMD64.EncodeShortJump(0x1000, 0x1000+1<<32); ok {
		t.Error("jump beyond 2 GiB must not be encoded short")
	}
}

func TestLongJumpRoundTrip(t *testing.T) {
	code := AMD64.EncodeLongJump(0x1000, 0x7f0011223344)
	if len(code) != AMD64.LongJumpLen {
		t.Fatalf("long jump is %d bytes", len(code))
	}
	inst := decodeAll(t, code[:6])[0]
	mem, ok := inst.Args[0].(x86asm.Mem)
	if inst.Op != x86asm.JMP || !ok || mem.Base != x86asm.RIP || mem.Disp != 0 {
		t.Fatalf("long jump decodes to %v", inst)
	}
	if got := binary.LittleEndian.Uint64(code[6:]); got != 0x7f0011223344 {
		t.Errorf("long jump target %#x", got)
	}
}

func TestStubRoundTrip(t *testing.T) {
	code, err := AMD64.EncodeStub(0x5000, 0x9008)
	if err != nil || len(code) != AMD64.StubLen {
		t.Fatalf("stub: %v %d", err, len(code))
	}
	inst := decodeAll(t, code)[0]
	mem := inst.Args[0].(x86asm.Mem)
	if inst.Op != x86asm.JMP || mem.Base != x86asm.RIP || 0x5000+uint64(inst.Len)+uint64(int32(mem.Disp)) != 0x9008 {
		t.Errorf("stub decodes to %v", inst)
	}
}

func TestGateCheckRoundTrip(t *testing.T) {
	const at, gate, target = 0x10000, 0x8f8, 0x12345
	code, err := AMD64.EncodeGateCheck(at, gate, target)
	if err != nil || len(code) != AMD64.GateCheckLen {
		t.Fatalf("gate check: %v, %d bytes", err, len(code))
	}
	insts := decodeAll(t, code)
	if len(insts) != 2 || insts[0].Op != x86asm.CMP || insts[1].Op != x86asm.JNE {
		t.Fatalf("gate check decodes to %v", insts)
	}
	mem := insts[0].Args[0].(x86asm.Mem)
	if mem.Base != x86asm.RIP || at+uint64(insts[0].Len)+uint64(int32(mem.Disp)) != gate || insts[0].MemBytes != 1 {
		t.Errorf("cmp reads %v", insts[0])
	}
	if imm, ok := insts[0].Args[1].(x86asm.Imm); !ok || imm != 0 {
		t.Errorf("cmp compares with %v", insts[0].Args[1])
	}
	if got := branchTarget(t, insts[1], at+uint64(insts[0].Len)); got != target {
		t.Errorf("jne goes to %#x", got)
	}
}

func TestTLSRewritesDecode(t *testing.T) {
	full := append(append([]byte(nil), gdToLE...), 0x10, 0, 0, 0)
	insts := decodeAll(t, full)
	if len(insts) != 2 || insts[0].Op != x86asm.MOV || insts[1].Op != x86asm.LEA || len(full) != 16 {
		t.Errorf("general-dynamic rewrite decodes to %v", insts)
	}
	insts = decodeAll(t, ldToLE)
	if len(insts) != 1 || insts[0].Op != x86asm.MOV || len(ldToLE) != 12 {
		t.Errorf("local-dynamic rewrite decodes to %v", insts)
	}
}

func TestDisplace(t *testing.T) {
	const addr, to = 0x401000, 0x7000000
	cases := []struct {
		name    string
		code    []byte
		covered int
		falls   bool
	}{
		// lea 0x1(%rdi),%eax; ret: a 4-byte function, padding after it.
		{"tiny", []byte{0x8d, 0x47, 0x01, 0xc3, 0xcc, 0xcc}, 4, false},
		// push %rbp; mov %rsp,%rbp; sub $0x10,%rsp
		{"prologue", []byte{0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10}, 8, true},
		// mov 0x100(%rip),%eax; ret
		{"rip-relative", []byte{0x8b, 0x05, 0x00, 0x01, 0x00, 0x00, 0xc3}, 6, true},
		// test %edi,%edi; je +0x10; ...
		{"short branch", []byte{0x85, 0xff, 0x74, 0x10, 0x90, 0x90, 0x90}, 5, true},
		// jmp rel32 (a previous patch's jump)
		{"stacked jump", []byte{0xe9, 0x00, 0x10, 0x00, 0x00}, 5, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, covered, falls, err := AMD64.Displace(c.code, addr, 5, to)
			if err != nil {
				t.Fatal(err)
			}
			if covered < 4 || covered != c.covered || falls != c.falls {
				t.Fatalf("covered %d falls %v, want %d %v", covered, falls, c.covered, c.falls)
			}
			// Every relocated instruction must mean the same as the original.
			orig := decodeAll(t, c.code[:covered])
			moved := decodeAll(t, out)
			if len(orig) != len(moved) {
				t.Fatalf("%d instructions became %d", len(orig), len(moved))
			}
			oa, ma := uint64(addr), uint64(to)
			for i := range orig {
				if orig[i].Op != moved[i].Op {
					t.Errorf("%v became %v", orig[i], moved[i])
				}
				if orig[i].PCRel > 0 {
					ot, mt := pcTarget(orig[i], oa), pcTarget(moved[i], ma)
					if ot != mt {
						t.Errorf("%v targets %#x, moved %v targets %#x", orig[i], ot, moved[i], mt)
					}
				}
				oa += uint64(orig[i].Len)
				ma += uint64(moved[i].Len)
			}
		})
	}
	// loop has only a short form: refused.
	if _, _, _, err := AMD64.Displace([]byte{0xe2, 0x10, 0x90, 0x90, 0x90, 0x90}, addr, 5, to); err == nil {
		t.Error("loop must be refused")
	}
}

func pcTarget(inst x86asm.Inst, addr uint64) uint64 {
	for _, a := range inst.Args {
		switch a := a.(type) {
		case x86asm.Rel:
			return uint64(int64(addr) + int64(inst.Len) + int64(a))
		case x86asm.Mem:
			if a.Base == x86asm.RIP {
				return uint64(int64(addr) + int64(inst.Len) + int64(int32(a.Disp)))
			}
		}
	}
	return 0
}

func TestBranchesInto(t *testing.T) {
	// xor %eax,%eax; (loop:) add %edi,%eax; dec %edi; jne loop; ret
	code := []byte{0x31, 0xc0, 0x01, 0xf8, 0xff, 0xcf, 0x75, 0xfa, 0xc3}
	if !AMD64.BranchesInto(code, 0x1000, 0x1000, 0x1005) {
		t.Error("loop head at +2 not found")
	}
	if AMD64.BranchesInto(code, 0x1000, 0x1000, 0x1002) {
		t.Error("no branch targets +1")
	}
}

// A RIP-relative operand that reads the bytes the new jump overwrites
// would read the jump instead: an earlier patch's long jump keeps its
// target right after the instruction.
func TestDisplaceReadsOverwrittenBytes(t *testing.T) {
	const addr, to = 0x401000, 0x7000000
	stacked := []byte{0xff, 0x25, 0, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11}
	if _, _, _, err := AMD64.Displace(stacked, addr, 14, to); !errors.Is(err, ErrCannotDisplace) {
		t.Errorf("long jump over a long jump: want ErrCannotDisplace, got %v", err)
	}
	// A short jump leaves the old target in place.
	out, covered, falls, err := AMD64.Displace(stacked, addr, 5, to)
	if err != nil || covered != 6 || falls {
		t.Fatalf("short jump over a long jump: covered %d falls %v: %v", covered, falls, err)
	}
	if inst := decodeAll(t, out)[0]; pcTarget(inst, to) != addr+6 {
		t.Errorf("moved %v reads %#x, want %#x", inst, pcTarget(inst, to), addr+6)
	}
	// cmpb $0, 3(%rip) reads the byte at +10: inside a 14-byte jump.
	cmp := []byte{0x80, 0x3d, 3, 0, 0, 0, 0, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90}
	if _, _, _, err := AMD64.Displace(cmp, addr, 14, to); !errors.Is(err, ErrCannotDisplace) {
		t.Errorf("cmpb into the jump: want ErrCannotDisplace, got %v", err)
	}
}
