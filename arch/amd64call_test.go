package arch

import (
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

func TestCallStubRoundTrip(t *testing.T) {
	const at = 0x7f0000001000
	f := CallFrame{Saved: 0x7f0000004000, Func: 0x7f0000004100, Done: 0x7f0000004108, Value: 1, FPU: 0x7f0000004200, XSave: true}
	for _, xsave := range []bool{true, false} {
		f.XSave = xsave
		code, marker, err := EncodeCallStub(at, f)
		if err != nil {
			t.Fatal(err)
		}
		insts := decodeAll(t, code)
		var ops []x86asm.Op
		memTargets := map[x86asm.Op][]uint64{}
		pc := uint64(at)
		for _, in := range insts {
			ops = append(ops, in.Op)
			for _, a := range in.Args {
				if m, ok := a.(x86asm.Mem); ok && m.Base == x86asm.RIP {
					memTargets[in.Op] = append(memTargets[in.Op], pc+uint64(in.Len)+uint64(int32(m.Disp)))
				}
			}
			if uint64(marker) == pc-at && in.Op != x86asm.SYSCALL {
				t.Errorf("marker at +%d is %v, not syscall", marker, in)
			}
			pc += uint64(in.Len)
		}
		want := x86asm.FXSAVE64
		if xsave {
			want = x86asm.XSAVE64
		}
		if !contains(ops, want) || !contains(ops, x86asm.CALL) || !contains(ops, x86asm.POPFQ) || ops[len(ops)-1] != x86asm.JMP {
			t.Errorf("xsave=%v: unexpected instruction sequence %v", xsave, ops)
		}
		if got := memTargets[x86asm.CALL]; len(got) != 1 || got[0] != f.Func {
			t.Errorf("call reads %#x, want %#x", got, f.Func)
		}
		if got := memTargets[x86asm.JMP]; len(got) != 1 || got[0] != f.Saved+16*8 {
			t.Errorf("jump back reads %#x, want saved rip %#x", got, f.Saved+16*8)
		}
		movs := memTargets[x86asm.MOV]
		if len(movs) != 17 || movs[0] != f.Done {
			t.Fatalf("%d memory moves: %#x", len(movs), movs)
		}
		for i, a := range movs[1:] {
			if a != f.Saved+uint64(i*8) {
				t.Errorf("register %d restored from %#x, want %#x", i, a, f.Saved+uint64(i*8))
			}
		}
	}
}

func contains(ops []x86asm.Op, op x86asm.Op) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}
