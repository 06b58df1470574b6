package arch

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/arch/arm64/arm64asm"
)

// TestARM64SigFrameLayout checks the frame against the offsets of the
// uapi structures (struct rt_sigframe as arm64's rt_sigreturn reads it).
func TestARM64SigFrameLayout(t *testing.T) {
	c := ARM64Context{SP: 0x7ffc0000, PC: 0x400123, PState: 0x20001000, FPSR: 0x8000010, FPCR: 0x3000000, Mask: 1 << 9}
	for i := range c.X {
		c.X[i] = 0x1000 + uint64(i)
	}
	for i := range c.V {
		for j := range c.V[i] {
			c.V[i][j] = byte(i*16 + j)
		}
	}
	b := c.SigFrame()
	le := binary.LittleEndian
	if len(b) != 4688 {
		t.Fatalf("frame is %d bytes, want 4688", len(b))
	}
	for _, f := range []struct {
		name string
		off  int
		got  uint64
		want uint64
	}{
		{"uc_flags", 128, le.Uint64(b[128:]), 0},
		{"uc_link", 136, le.Uint64(b[136:]), 0},
		{"uc_stack.ss_sp", 144, le.Uint64(b[144:]), 0},
		{"uc_stack.ss_flags", 152, uint64(le.Uint32(b[152:])), 3},
		{"uc_stack.ss_size", 160, le.Uint64(b[160:]), 0},
		{"uc_sigmask", 168, le.Uint64(b[168:]), 1 << 9},
		{"fault_address", 304, le.Uint64(b[304:]), 0},
		{"regs[0]", 312, le.Uint64(b[312:]), 0x1000},
		{"regs[30]", 312 + 240, le.Uint64(b[552:]), 0x1000 + 30},
		{"sp", 560, le.Uint64(b[560:]), 0x7ffc0000},
		{"pc", 568, le.Uint64(b[568:]), 0x400123},
		{"pstate", 576, le.Uint64(b[576:]), 0x20001000},
		{"fpsimd magic", 592, uint64(le.Uint32(b[592:])), 0x46508001},
		{"fpsimd size", 596, uint64(le.Uint32(b[596:])), 528},
		{"fpsr", 600, uint64(le.Uint32(b[600:])), 0x8000010},
		{"fpcr", 604, uint64(le.Uint32(b[604:])), 0x3000000},
		{"vregs[0] low", 608, le.Uint64(b[608:]), 0x0706050403020100},
		{"vregs[31] high", 608 + 31*16 + 8, le.Uint64(b[608+31*16+8:]), 0xfffefdfcfbfaf9f8},
		{"terminator", 1120, le.Uint64(b[1120:]), 0},
	} {
		if f.got != f.want {
			t.Errorf("%s at %d: %#x, want %#x", f.name, f.off, f.got, f.want)
		}
	}
	back, err := ParseARM64SigFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if *back != c {
		t.Errorf("round trip: %+v, want %+v", back, c)
	}
	if _, err := ParseARM64SigFrame(b[:100]); err == nil {
		t.Error("short frame accepted")
	}
}

// TestARM64CallStub decodes the stub and follows what it addresses.
func TestARM64CallStub(t *testing.T) {
	const at = 0x7f0000001000
	f := CallFrame{Saved: 0x7f0000003140, Func: 0x7f0000003090, Done: 0x7f0000003098, Value: 1}
	abi := ARM64.CallStub()
	code, marker, err := abi.Encode(at, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(code) > abi.StubLen {
		t.Fatalf("stub is %d bytes, StubLen %d", len(code), abi.StubLen)
	}
	insts := a64Insts(t, code)
	var lines []string
	var page uint64 // the last ADRP's page, for the access that follows it
	for i, in := range insts {
		pc := uint64(at + 4*i)
		s := arm64asm.GNUSyntax(in)
		switch in.Op {
		case arm64asm.ADRP:
			page = a64Target(t, in, pc)
			s = strings.Fields(s)[0] + " " + strings.TrimSuffix(strings.Fields(s)[1], ",")
		case arm64asm.ADD, arm64asm.LDR, arm64asm.STRB:
			if i > 0 && insts[i-1].Op == arm64asm.ADRP || in.Op == arm64asm.STRB {
				var off uint64
				if in.Op == arm64asm.ADD {
					fmt.Sscanf(in.Args[2].(arm64asm.ImmShift).String(), "#%v", &off)
				} else {
					off = uint64(a64MemImm(t, in))
				}
				s = fmt.Sprintf("%s -> %#x", strings.Fields(s)[0], page+off)
			}
		}
		if i*4 == marker {
			s = "marker: " + s
		}
		lines = append(lines, s)
	}
	want := []string{"mov x9, x0", "mov x10, x1", "mov x11, x2", "mov x12, x3",
		"mov x0, #0x0", "mov x1, #0x0", "adrp x2", fmt.Sprintf("add -> %#x", f.Saved+168),
		"mov x3, #0x8", "mov x8, #0x87", "svc #0x0",
		"adrp x16", fmt.Sprintf("add -> %#x", f.Saved+592),
		"mrs x17, s3_3_c4_c4_1", "str w17, [x16,#8]", "mrs x17, s3_3_c4_c4_0", "str w17, [x16,#12]"}
	for q := 0; q < 32; q += 2 {
		want = append(want, fmt.Sprintf("stp q%d, q%d, [x16,#%d]", q, q+1, 16+16*q))
	}
	want = append(want, "mov x0, x9", "mov x1, x10", "mov x2, x11", "mov x3, x12",
		"adrp x16", fmt.Sprintf("ldr -> %#x", f.Func), "blr x16",
		"adrp x16", "mov w17, #0x1", fmt.Sprintf("strb -> %#x", f.Done),
		"adrp x16", fmt.Sprintf("add -> %#x", f.Saved+592))
	for q := 0; q < 32; q += 2 {
		want = append(want, fmt.Sprintf("ldp q%d, q%d, [x16,#%d]", q, q+1, 16+16*q))
	}
	want = append(want, "ldr w17, [x16,#8]", "msr s3_3_c4_c4_1, x17", "ldr w17, [x16,#12]", "msr s3_3_c4_c4_0, x17",
		"mov x8, #0xac", "marker: svc #0x0",
		"adrp x16", fmt.Sprintf("add -> %#x", f.Saved), "mov sp, x16", "mov x8, #0x8b", "svc #0x0", "brk #0x0")
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("stub:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	// The same stub far from its data, and refusals.
	if _, _, err := abi.Encode(at, CallFrame{Saved: at + 1<<33, Func: at + 0x100, Done: at + 0x108}); err == nil {
		t.Error("data out of ADRP reach accepted")
	}
	if _, _, err := abi.Encode(at, CallFrame{Saved: f.Saved + 8, Func: f.Func, Done: f.Done}); err == nil {
		t.Error("a frame that is not 16-aligned accepted")
	}
}
