package consistency

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"testing"
)

// regions is target memory made of fake stacks and a few bytes of code.
type regions struct {
	stacks []*fakeStack
	codeAt uint64
	code   []byte
}

func (m *regions) ReadAt(p []byte, addr uint64) (int, error) {
	if addr >= m.codeAt && addr+uint64(len(p)) <= m.codeAt+uint64(len(m.code)) {
		return copy(p, m.code[addr-m.codeAt:]), nil
	}
	for _, s := range m.stacks {
		if addr >= s.base && addr < s.hi() {
			return s.ReadAt(p, addr)
		}
	}
	return 0, fmt.Errorf("fake read %#x: unmapped", addr)
}

func (m *regions) stackOf(addr uint64) (uint64, uint64) {
	for _, s := range m.stacks {
		if addr >= s.base && addr < s.hi() {
			return s.base, s.hi()
		}
	}
	return 0, 0
}

// A thread stopped inside the arm64 signal trampoline itself (its handler
// has returned, rt_sigreturn is next) resumes at the interrupted context
// the signal frame holds. Neither the trampoline's CFI, which like the
// vDSO's restores only x29 and x30 from the frame record, nor a scan of
// the handler's stack finds that context: a thread interrupted in leaf,
// called from mid, called from target, must be found inside target, and
// inside leaf at the exact PC.
func TestARM64StoppedInTrampoline(t *testing.T) {
	const (
		target = 0x1000 // outermost frame
		mid    = 0x2000 // stp x29, x30, [sp, #-16]!: returns into target
		leaf   = 0x3000 // frameless: returns into mid through LR
		tramp  = 0x4004 // nop at 0x4000 (where its CFI starts), then the trampoline
	)
	var cfi []byte
	add := func(b []byte) {
		cfi = binary.LittleEndian.AppendUint32(cfi, uint32(len(b)))
		cfi = append(cfi, b...)
	}
	// CIE 0: code align 4, data align -8, RA x30, CFA = sp+0.
	add([]byte{0xff, 0xff, 0xff, 0xff, 1, 0, 4, 0x78, 30, 0x0c, 31, 0})
	// CIE 1 ("S", a signal frame): CFA = x29+0, x29 at CFA+0, x30 at CFA+8.
	sigCIE := uint32(len(cfi))
	add([]byte{0xff, 0xff, 0xff, 0xff, 1, 'S', 0, 4, 0x78, 30,
		0x0c, 29, 0, 0x9d, 0x00, 0x11, 30, 0x7f})
	fde := func(cie uint32, begin, size uint64, instrs ...byte) {
		var body []byte
		body = binary.LittleEndian.AppendUint32(body, cie)
		body = binary.LittleEndian.AppendUint64(body, begin)
		body = binary.LittleEndian.AppendUint64(body, size)
		add(append(body, instrs...))
	}
	fde(0, target, 0x100, 0x07, 30)                // undefined x30: the end
	fde(0, mid, 0x100, 0x0e, 16, 0x9d, 2, 0x9e, 1) // CFA=sp+16; x29, x30 below it
	fde(0, leaf, 0x100)                            // return address in x30
	withTramp := append([]byte(nil), cfi...)
	fde(sigCIE, tramp-4, 12)
	withTramp, cfi = cfi, withTramp
	module := func(b []byte) *Modules {
		fdes, err := parseCFI(b, binary.LittleEndian, 0, 8, 0)
		if err != nil {
			t.Fatal(err)
		}
		m := newModule("synthetic", 0, elf.EM_AARCH64)
		m.text = []span{{0x1000, 0x5000}}
		m.fdes = m.fdes.Append(fdes)
		return NewModules(m)
	}

	own := newFakeStack(stackBase, 64<<10)
	alt := newFakeStack(stackBase+1<<20, 64<<10)
	mem := &regions{stacks: []*fakeStack{own, alt}, codeAt: tramp, code: ARM64.SigFrame.Trampoline}
	isp := own.hi() - 0x200 // the interrupted SP: mid's frame record
	own.put(isp, 0)
	own.put(isp+8, target+0x20)
	sf := alt.hi() - 0x2000 // the signal frame, at the SP the handler returned with
	record := sf + 0x1200   // the kernel's frame record {x29, x30}
	alt.put(record, isp)
	alt.put(record+8, mid+0x20)
	alt.put(sf+ARM64.SigFrame.Regs+8*29, isp)
	alt.put(sf+ARM64.SigFrame.Regs+8*30, mid+0x20)
	alt.put(sf+ARM64.SigFrame.SP, isp)
	alt.put(sf+ARM64.SigFrame.PC, leaf+0x10)

	for _, tc := range []struct {
		name string
		mods *Modules
	}{{"trampoline CFI", module(withTramp)}, {"no trampoline CFI", module(cfi)}} {
		for _, pc := range []uint64{tramp, tramp + 4} {
			regs := make([]uint64, 32)
			regs[29] = record
			regs[30] = 0x9990 // the handler's own return
			th := Thread{TID: 5, Regs: regs, PC: pc, SP: sf, StackLo: alt.base, StackHi: alt.hi(), StackOf: mem.stackOf}
			for _, r := range []Range{rng(leaf, "leaf"), rng(target, "target")} {
				res, err := Check(ARM64, tc.mods, mem, []Thread{th}, []Range{r})
				if err == nil && len(res.Busy) == 0 {
					t.Errorf("%s, pc %#x in the trampoline: reported safe from %s", tc.name, pc, r.Name)
					continue
				}
				if err != nil || len(res.Busy) != 1 || !res.Busy[0].Precise {
					t.Errorf("%s, pc %#x: busy %v, err %v; want %s found precisely", tc.name, pc, res.Busy, err, r.Name)
				}
			}
		}
	}
}
