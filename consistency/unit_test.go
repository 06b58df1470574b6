package consistency

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fakeStack is target memory holding only one stack; it stands in for
// /proc/PID/mem in tests that need exact control of every word.
type fakeStack struct {
	base  uint64
	data  []byte
	fail  error  // returned by every read when set
	limit uint64 // reads at or above this address fail when nonzero
	short bool   // return half of each read with no error
	reads int
}

func newFakeStack(base uint64, size int) *fakeStack {
	return &fakeStack{base: base, data: make([]byte, size)}
}

func (s *fakeStack) put(addr, v uint64) {
	binary.LittleEndian.PutUint64(s.data[addr-s.base:], v)
}

func (s *fakeStack) hi() uint64 { return s.base + uint64(len(s.data)) }

func (s *fakeStack) ReadAt(p []byte, addr uint64) (int, error) {
	s.reads++
	if s.fail != nil {
		return 0, s.fail
	}
	if addr < s.base || addr+uint64(len(p)) > s.hi() {
		return 0, fmt.Errorf("fake read %#x+%d outside stack", addr, len(p))
	}
	if s.limit != 0 && addr+uint64(len(p)) > s.limit {
		return 0, errors.New("fake I/O error")
	}
	n := len(p)
	if s.short && n > 1 {
		n /= 2
	}
	return copy(p[:n], s.data[addr-s.base:]), nil
}

// cfiBuilder assembles a .debug_frame section. Its CIEs are amd64-style:
// CFA = rsp+8, return address at CFA-8.
type cfiBuilder struct{ b []byte }

func newCFI() *cfiBuilder {
	c := &cfiBuilder{}
	c.cie("")
	return c
}

// cie appends a CIE and returns its offset.
func (c *cfiBuilder) cie(aug string) uint32 {
	off := uint32(len(c.b))
	body := []byte{0xff, 0xff, 0xff, 0xff, 1}
	body = append(body, aug...)
	body = append(body, 0, 1, 0x78, 16, 0x0c, 7, 8, 0x90, 1)
	c.b = binary.LittleEndian.AppendUint32(c.b, uint32(len(body)))
	c.b = append(c.b, body...)
	return off
}

func (c *cfiBuilder) fde(begin, size uint64, instrs ...byte) *cfiBuilder {
	return c.fdeFor(0, begin, size, instrs...)
}

func (c *cfiBuilder) fdeFor(cie uint32, begin, size uint64, instrs ...byte) *cfiBuilder {
	var body []byte
	body = binary.LittleEndian.AppendUint32(body, cie)
	body = binary.LittleEndian.AppendUint64(body, begin)
	body = binary.LittleEndian.AppendUint64(body, size)
	body = append(body, instrs...)
	c.b = binary.LittleEndian.AppendUint32(c.b, uint32(len(body)))
	c.b = append(c.b, body...)
	return c
}

func (c *cfiBuilder) module(t *testing.T) *Module {
	t.Helper()
	fdes, err := parseCFI(c.b, binary.LittleEndian, 0, 8, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := newModule("synthetic", 0, elf.EM_X86_64)
	m.text = []span{{0x1000, 0x10000}}
	m.fdes = m.fdes.Append(fdes)
	return m
}

// Synthetic functions, each 0x100 bytes.
const (
	fnA     = 0x1000 // pushes rbp after 4 bytes
	fnB     = 0x2000 // frameless
	fnC     = 0x3000 // outermost: return address undefined
	fnD     = 0x4000 // never on the stack
	fnR     = 0x5000 // return address rule restored by DW_CFA_restore
	fnPanic = 0x6000 // CFI that panics the frame package
	fnExpr  = 0x7000 // CFA given by an unsupported DWARF expression
	fnLoop  = 0x8000 // CFA equal to SP: no progress
	fnNoCFI = 0x9000 // inside the module but without an FDE
	fnSig   = 0xa000 // signal trampoline: [rsp] = interrupted SP, [rsp+8] = PC
	fnExpr2 = 0xb000 // CFA = rsp+8 as a DWARF expression
)

func syntheticModules(t *testing.T) *Modules {
	c := newCFI()
	sig := c.cie("S")
	c.fdeFor(sig, fnSig, 0x10,
		0x0f, 3, 0x77, 0x00, 0x06, // CFA = *(rsp+0)
		0x10, 7, 2, 0x77, 0x00, // rsp saved at rsp+0
		0x10, 16, 2, 0x77, 0x08). // rip saved at rsp+8
		fde(fnExpr2, 0x100, 0x0f, 2, 0x77, 0x08).
		fde(fnA, 0x100, 0x44, 0x0e, 0x10, 0x86, 0x02). // advance 4; CFA=rsp+16; rbp at CFA-16
		fde(fnB, 0x100).
		fde(fnC, 0x100, 0x07, 16). // undefined r16
		fde(fnD, 0x100).
		// CFA=rsp+16, ra at CFA-16; advance 0x10; restore r16; CFA=rsp+8
		fde(fnR, 0x100, 0x0e, 0x10, 0x90, 0x02, 0x50, 0xd0, 0x0e, 0x08).
		fde(fnPanic, 0x100, 0x0b).            // restore_state with nothing remembered
		fde(fnExpr, 0x100, 0x0f, 0x01, 0x50). // CFA = DW_OP_reg0
		fde(fnLoop, 0x100, 0x0e, 0x00)        // CFA=rsp+0
	return NewModules(c.module(t))
}

func rng(lo uint64, name string) Range { return Range{Lo: lo, Hi: lo + 0x100, Name: name} }

const stackBase = 0x7f0000000000

func thread(s *fakeStack, pc, sp uint64) Thread {
	regs := make([]uint64, 16)
	regs[7] = sp
	return Thread{TID: 42, Regs: regs, PC: pc, SP: sp, StackLo: s.base, StackHi: s.hi()}
}

func TestPreciseSynthetic(t *testing.T) {
	mods := syntheticModules(t)
	s := newFakeStack(stackBase, 64<<10)
	sp := s.hi() - 0x100
	s.put(sp, 0xdead)      // saved rbp
	s.put(sp+8, fnB+0x50)  // A returns into B
	s.put(sp+16, fnC+0x20) // B returns into C
	s.put(sp+24, fnD+0x10) // stale word: precise unwinding ignores it
	th := []Thread{thread(s, fnA+0x10, sp)}

	for _, tc := range []struct {
		r     Range
		frame int
	}{{rng(fnA, "A"), 0}, {rng(fnB, "B"), 1}, {rng(fnC, "C"), 2}} {
		res, err := Check(AMD64, mods, s, th, []Range{tc.r})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Busy) != 1 || !res.Busy[0].Precise || res.Busy[0].Frame != tc.frame || res.Fallbacks != 0 {
			t.Fatalf("%s: got %v fallbacks %d", tc.r.Name, res.Busy, res.Fallbacks)
		}
	}
	s.reads = 0
	res, err := Check(AMD64, mods, s, th, []Range{rng(fnD, "D")})
	if err != nil || len(res.Busy) != 0 || res.Fallbacks != 0 || res.Frames != 3 {
		t.Fatalf("D: busy %v fallbacks %d frames %d err %v", res.Busy, res.Fallbacks, res.Frames, err)
	}
	if s.reads != 1 {
		t.Errorf("%d reads for one thread, want 1 bulk read", s.reads)
	}
}

func TestExpressionCFA(t *testing.T) {
	mods := syntheticModules(t)
	s := newFakeStack(stackBase, 64<<10)
	sp := s.hi() - 0x100
	s.put(sp, fnC+0x20)
	s.put(sp+8, fnD+0x20)
	th := []Thread{thread(s, fnExpr2+0x10, sp)}
	res, err := Check(AMD64, mods, s, th, []Range{rng(fnC, "C"), rng(fnD, "D")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Busy) != 1 || res.Busy[0].Range.Name != "C" || !res.Busy[0].Precise || res.Fallbacks != 0 {
		t.Fatalf("got %v, fallbacks %d", res.Busy, res.Fallbacks)
	}
}

// A handler (B, frameless) returned into the trampoline, which restores
// the interrupted context: A at an exact PC, then C.
func TestSignalFrame(t *testing.T) {
	mods := syntheticModules(t)
	s := newFakeStack(stackBase, 64<<10)
	sp := s.hi() - 0x400
	isp := sp + 0x100
	s.put(sp, fnSig+1) // handler's return address: the trampoline
	s.put(sp+8, isp)
	s.put(sp+16, fnA+0x10) // interrupted PC
	s.put(isp+8, fnC+0x20)
	s.put(isp+16, fnD+0x20) // stale
	th := []Thread{thread(s, fnB+0x10, sp)}
	for name, frame := range map[string]int{"A": 2, "C": 3} {
		r := map[string]Range{"A": rng(fnA, "A"), "C": rng(fnC, "C")}[name]
		res, err := Check(AMD64, mods, s, th, []Range{r, rng(fnD, "D")})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Busy) != 1 || res.Busy[0].Range.Name != name || res.Busy[0].Frame != frame || !res.Busy[0].Precise || res.Fallbacks != 0 {
			t.Fatalf("%s: got %v, fallbacks %d", name, res.Busy, res.Fallbacks)
		}
	}
	// An interrupted PC is exact: one equal to a range's end is outside.
	res, err := Check(AMD64, mods, s, th, []Range{{Lo: fnA, Hi: fnA + 0x10, Name: "A-head"}})
	if err != nil || len(res.Busy) != 0 {
		t.Fatalf("interrupted PC at the end of a range: %v, %v", res.Busy, err)
	}
	// An interrupted context on another stack (sigaltstack) cannot be
	// examined: an error, not a scan of this stack.
	s.put(sp+16, fnA+0x10)
	s.put(sp+8, s.base-0x10000)
	res, err = Check(AMD64, mods, s, th, []Range{rng(fnD, "D")})
	if err == nil {
		t.Fatalf("interrupted context on another stack: no error (busy %v)", res.Busy)
	}
}

func TestEvalExpr(t *testing.T) {
	regs := func(n uint64) (uint64, bool) { return 0x1000 + n, n <= 16 }
	mem := func(a uint64) (uint64, error) { return a * 2, nil }
	cfa := uint64(0x500)
	for _, tc := range []struct {
		name string
		code []byte
		push *uint64
		want uint64
		err  bool
	}{
		{"breg7 -8", []byte{0x77, 0x78}, nil, 0x1007 - 8, false},
		{"lit3 lit4 plus", []byte{0x33, 0x34, 0x22}, nil, 7, false},
		{"cfa plus_uconst 16 deref", []byte{0x23, 0x10, 0x06}, &cfa, 0xa20, false},
		// The PLT rule: rsp+8 + ((rip&15) >= 11) << 3, with rip&15 = 0 here.
		{"plt", []byte{0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22}, nil, 0x1007 + 8, false},
		{"bra taken", []byte{0x31, 0x28, 0x01, 0x00, 0x35, 0x36}, nil, 6, false},
		{"bra not taken", []byte{0x30, 0x28, 0x01, 0x00, 0x35}, nil, 5, false},
		{"const1s -1", []byte{0x09, 0xff}, nil, ^uint64(0), false},
		{"bra loop", []byte{0x31, 0x28, 0xfd, 0xff}, nil, 0, true},
		{"unknown register", []byte{0x92, 40, 0}, nil, 0, true},
		{"reg0", []byte{0x50}, nil, 0, true},
		{"underflow", []byte{0x22}, nil, 0, true},
		{"truncated", []byte{0x0e, 1, 2}, nil, 0, true},
		{"empty", nil, nil, 0, true},
	} {
		got, err := evalExpr(tc.code, tc.push, regs, mem)
		if (err != nil) != tc.err || (err == nil && got != tc.want) {
			t.Errorf("%s: got %#x, %v; want %#x, error %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// The frame package turns DW_CFA_restore into "undefined"; taken at face
// value that would end the stack early and miss the callers.
func TestRestoredReturnAddressIsNotAnEnd(t *testing.T) {
	mods := syntheticModules(t)
	s := newFakeStack(stackBase, 64<<10)
	sp := s.hi() - 0x100
	s.put(sp, fnC+0x20)
	th := []Thread{thread(s, fnR+0x40, sp)}
	res, err := Check(AMD64, mods, s, th, []Range{rng(fnC, "C")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Busy) != 1 || !res.Busy[0].Precise || res.Busy[0].Frame != 1 {
		t.Fatalf("got %v, fallbacks %d", res.Busy, res.Fallbacks)
	}
}

func TestReturnAddressBoundaries(t *testing.T) {
	mods := NewModules()
	r := Range{Lo: 0x4000, Hi: 0x4100, Name: "D"}
	for _, tc := range []struct {
		word uint64
		busy bool
	}{
		{r.Lo - 1, false},
		{r.Lo, true}, // resuming would execute the old bytes
		{r.Hi, true}, // the call was the last instruction of D
		{r.Hi + 1, false},
	} {
		s := newFakeStack(stackBase, 4096)
		sp := s.hi() - 64
		s.put(sp+16, tc.word)
		res, err := Check(AMD64, mods, s, []Thread{thread(s, 0x123456, sp)}, []Range{r})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(res.Busy) > 0; got != tc.busy {
			t.Errorf("word %#x: busy %v, want %v (%v)", tc.word, got, tc.busy, res.Busy)
		}
	}
}

func TestFallbackNoCFI(t *testing.T) {
	s := newFakeStack(stackBase, 256<<10)
	sp := s.hi() - 200<<10 // deep stack: the scan must read past the first bulk read
	s.put(sp+8, 0x1111)
	s.put(s.hi()-64, fnD+0x30)
	r := rng(fnD, "D")
	for name, mods := range map[string]*Modules{"no modules": NewModules(), "no FDE": syntheticModules(t), "nil": nil} {
		s.reads = 0
		res, err := Check(AMD64, mods, s, []Thread{thread(s, fnNoCFI+4, sp)}, []Range{r})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(res.Busy) != 1 || res.Busy[0].Precise || res.Fallbacks != 1 || res.Busy[0].StackAddr != s.hi()-64 {
			t.Fatalf("%s: got %v, fallbacks %d", name, res.Busy, res.Fallbacks)
		}
		if !strings.Contains(res.Busy[0].String(), "may be in D") {
			t.Errorf("%s: message %q", name, res.Busy[0])
		}
		if s.reads > 2 {
			t.Errorf("%s: %d reads, want bulk reads", name, s.reads)
		}
	}
}

// Each unwinding failure must fall back to the scan from the failing
// frame's SP, which still finds the word pointing into D.
func TestFallbackOnUnwindErrors(t *testing.T) {
	mods := syntheticModules(t)
	for _, tc := range []struct {
		name string
		pc   uint64
		ra   uint64 // return address stored at SP
	}{
		{"panicking CFI", fnPanic + 8, fnC + 0x20},
		{"expression CFA", fnExpr + 8, fnC + 0x20},
		{"no progress", fnLoop + 8, fnC + 0x20},
		{"return address zero", fnB + 8, 0},
		{"return address outside modules", fnB + 8, 0xabcdef},
	} {
		s := newFakeStack(stackBase, 64<<10)
		sp := s.hi() - 0x200
		s.put(sp, tc.ra)
		s.put(sp+0x100, fnD+0x40)
		res, err := Check(AMD64, mods, s, []Thread{thread(s, tc.pc, sp)}, []Range{rng(fnD, "D")})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(res.Busy) != 1 || res.Busy[0].Precise || res.Fallbacks != 1 {
			t.Errorf("%s: got %v, fallbacks %d", tc.name, res.Busy, res.Fallbacks)
		}
	}
}

func TestMemoryErrorsAreNeverSafe(t *testing.T) {
	r := []Range{rng(fnD, "D")}
	for _, tc := range []struct {
		name string
		mods *Modules
		pc   uint64
		mut  func(*fakeStack)
	}{
		{"every read fails", syntheticModules(t), fnA + 0x10, func(s *fakeStack) { s.fail = errors.New("EIO") }},
		{"every read fails, no CFI", NewModules(), fnA + 0x10, func(s *fakeStack) { s.fail = errors.New("EIO") }},
		{"short reads", NewModules(), fnA + 0x10, func(s *fakeStack) { s.short = true }},
		{"top of stack unreadable", NewModules(), 0x10, func(s *fakeStack) { s.limit = s.hi() - 0x1000 }},
	} {
		s := newFakeStack(stackBase, 128<<10)
		sp := s.hi() - 0x10000
		s.put(sp+8, fnD+0x50)
		tc.mut(s)
		res, err := Check(AMD64, tc.mods, s, []Thread{thread(s, tc.pc, sp)}, r)
		if err == nil && len(res.Busy) == 0 {
			t.Errorf("%s: reported safe", tc.name)
		}
		var te *ThreadError
		if err != nil && (!errors.As(err, &te) || te.TID != 42 || !strings.Contains(err.Error(), "thread 42")) {
			t.Errorf("%s: error does not name the thread: %v", tc.name, err)
		}
	}
}

func TestBadThreadState(t *testing.T) {
	s := newFakeStack(stackBase, 4096)
	th := thread(s, 0x1000, s.hi()+8)
	if _, err := Check(AMD64, NewModules(), s, []Thread{th}, []Range{rng(fnD, "D")}); err == nil {
		t.Error("SP outside the stack: no error")
	}
	th = thread(s, 0x1000, s.hi()-8)
	th.Regs = nil
	if _, err := Check(ARM64, NewModules(), s, []Thread{th}, []Range{rng(fnD, "D")}); err == nil {
		t.Error("arm64 without LR: no error")
	}
	if _, err := Check(AMD64, NewModules(), s, []Thread{th}, []Range{{Lo: 2, Hi: 1}}); err == nil {
		t.Error("inverted range: no error")
	}
	if _, err := Check(ARM64, syntheticModules(t), s, []Thread{th}, []Range{rng(fnD, "D")}); err == nil {
		t.Error("amd64 module with arm64: no error")
	}
}

func TestARM64LinkRegister(t *testing.T) {
	s := newFakeStack(stackBase, 4096)
	sp := s.hi() - 64
	regs := make([]uint64, 32)
	regs[30] = fnD + 0x10
	th := Thread{TID: 7, Regs: regs, PC: 0x123, SP: sp, StackLo: s.base, StackHi: s.hi()}
	res, err := Check(ARM64, NewModules(), s, []Thread{th}, []Range{rng(fnD, "D")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Busy) != 1 || res.Busy[0].Precise || !strings.Contains(res.Busy[0].String(), "link register") {
		t.Fatalf("got %v", res.Busy)
	}
}

func TestRangeSet(t *testing.T) {
	rs, err := newRangeSet([]Range{
		{Lo: 0x300, Hi: 0x400, Name: "c"},
		{Lo: 0x100, Hi: 0x1000, Name: "big"},
		{Lo: 0x200, Hi: 0x280, Name: "a"},
		{Lo: 0x500, Hi: 0x500, Name: "empty"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[uint64]string{
		0xff: "", 0x100: "big", 0x250: "a", 0x290: "big", 0x350: "c", 0x450: "big", 0x500: "big", 0xfff: "big", 0x1000: "",
	} {
		got := ""
		if i := rs.find(addr); i >= 0 {
			got = rs.r[i].Name
		}
		if got != want {
			t.Errorf("find(%#x) = %q, want %q", addr, got, want)
		}
	}
}

func TestScanCFA(t *testing.T) {
	// DW_CFA_advance_loc 5; def_cfa_offset 16; offset r6 at cfa-16;
	// def_cfa_register r6; undefined r16; restore r3; val_offset r1;
	// expression r2 {2 bytes}; restore_extended r70.
	info := scanCFA([]byte{0x45, 0x0e, 0x10, 0x86, 0x02, 0x0d, 0x06, 0x07, 0x10, 0xc3,
		0x14, 0x01, 0x02, 0x10, 0x02, 0x02, 0x77, 0x08, 0x06, 0x46})
	if info.bad || !info.hasUndefined(16) || info.hasUndefined(6) || !info.hasRestore(3) ||
		!info.valOffset || !info.hasRestore(70) {
		t.Fatalf("scan: %+v", info)
	}
	if !scanCFA([]byte{0x2d}).bad || !scanCFA([]byte{0x0f, 0x05, 0x00}).bad {
		t.Error("undecodable streams not flagged")
	}
}

func TestBusyError(t *testing.T) {
	res := Result{Busy: []Busy{{TID: 1, Range: Range{Name: "f"}, Frame: 2, Addr: 0x10, Precise: true}}}
	err := res.Err()
	var be *BusyError
	if !errors.Is(err, ErrBusy) || !errors.As(err, &be) || len(be.Busy) != 1 {
		t.Fatalf("Err() = %v", err)
	}
	if want := "thread 1 is in f (frame 2, return address 0x10)"; !strings.Contains(err.Error(), want) {
		t.Errorf("%q lacks %q", err, want)
	}
	if (Result{}).Err() != nil {
		t.Error("empty result is busy")
	}
}

func TestTooManyFrames(t *testing.T) {
	mods := syntheticModules(t)
	s := newFakeStack(stackBase, 64<<10)
	sp := s.base + 0x100
	for a := sp; a < s.hi()-64; a += 8 {
		s.put(a, fnB+0x50) // B returning into B, over and over
	}
	s.put(s.hi()-32, fnD+0x10)
	res, err := Check(AMD64, mods, s, []Thread{thread(s, fnB+0x10, sp)}, []Range{rng(fnD, "D")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Frames != MaxFrames || res.Fallbacks != 1 || len(res.Busy) != 1 || res.Busy[0].Frame != MaxFrames {
		t.Fatalf("frames %d, fallbacks %d, busy %v", res.Frames, res.Fallbacks, res.Busy)
	}
}

func TestLoadModule(t *testing.T) {
	if _, err := LoadModule("/dev/null", 0); err == nil {
		t.Error("LoadModule(/dev/null): no error")
	}
	m, err := LoadModule("/proc/self/exe", 0x1000)
	if err != nil {
		t.Skipf("cannot load the test binary: %v", err)
	}
	if m.Bias() != 0x1000 || m.Name() != "/proc/self/exe" {
		t.Errorf("bias %#x, name %q", m.Bias(), m.Name())
	}
	mods := NewModules(m, nil)
	if len(m.text) == 0 || mods.Lookup(m.text[0].lo) != m || mods.Lookup(m.text[0].lo-1) == m {
		t.Errorf("lookup by text %v failed", m.text)
	}
	if !m.Contains(m.text[0].lo) || m.Contains(m.text[len(m.text)-1].hi) {
		t.Error("Contains disagrees with the text segments")
	}
}

// A system call as the last instruction of a range: the thread resumes
// at it when the call restarts, although its PC is past the range.
func TestSyscallRestart(t *testing.T) {
	s := newFakeStack(stackBase, 4096)
	r := rng(fnD, "D")
	for pc, busy := range map[uint64]bool{r.Hi: true, r.Hi + 1: true, r.Hi + 2: false} {
		res, err := Check(AMD64, NewModules(), s, []Thread{thread(s, pc, s.hi()-64)}, []Range{r})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(res.Busy) == 1 && !res.Busy[0].Precise; got != busy {
			t.Errorf("pc %#x: busy %v, want %v", pc, res.Busy, busy)
		}
		if busy && !strings.Contains(res.Busy[0].String(), "restarting the system call") {
			t.Errorf("message %q", res.Busy[0])
		}
	}
}
