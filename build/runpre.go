package build

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// runPre proves that a function of the original build is the function
// the target runs: the two instruction streams must match one for one,
// modulo
//   - relocated fields (checked, where the symbol can be found in the
//     target, to point at that symbol),
//   - the linker's relaxations of GOT and TLS accesses,
//   - branch encodings: with every function in its own section, the
//     assembler cannot shorten a jump to another function of the file
//     (jmp rel32 instead of rel8), which also moves what follows,
//   - alignment padding (NOPs), whose length follows from the above.
//
// Branch destinations inside the function must correspond. It returns the
// target address of every symbol a checked field referred to. The
// instruction-level rules are the machine's (runPreAMD64, runPreARM64).
func (b *builder) runPre(u *unit, fn *symbol, tgt []byte, tgtAddr uint64) (map[*symbol]uint64, error) {
	c := &preCheck{b: b, u: u, fn: fn, sec: fn.sec, base: fn.value, tgtAddr: tgtAddr, observed: map[*symbol]uint64{}}
	if err := u.orig.mach.runPre(c, fn.sec.data[fn.value:fn.value+fn.size], tgt); err != nil {
		return nil, err
	}
	return c.observed, nil
}

// preCheck is one function's run-pre match in progress.
type preCheck struct {
	b        *builder
	u        *unit
	fn       *symbol
	sec      *section
	base     uint64 // the function's offset in its section
	tgtAddr  uint64 // the target function's address
	observed map[*symbol]uint64
}

func (c *preCheck) fail(off int, format string, args ...any) error {
	return &MismatchError{Function: c.fn.name, File: localFile(c.fn, c.u.orig.file), Offset: uint64(off), Detail: fmt.Sprintf(format, args...)}
}

// relocsIn returns the relocations of [lo, hi) of the function.
func (c *preCheck) relocsIn(lo, hi int) []reloc {
	var out []reloc
	for _, r := range c.sec.relocs {
		o := int(r.off) - int(c.base)
		if o >= lo && o < hi {
			out = append(out, r)
		}
	}
	return out
}

// checkSym compares where a relocated field points in the target with
// where the symbol is. addr is the address of the relocation's symbol
// (section start for a section symbol) as the target's bytes imply.
func (c *preCheck) checkSym(off int, r reloc, addr uint64) error {
	b, fail := c.b, c.fail
	t, d := r.target()
	tAddr := addr + uint64(r.addend-d)
	if t.sec == c.sec {
		return nil // inside the function: checked as a branch
	}
	if !t.defined() {
		// Defined in another file of the target or in a library: the
		// field must still lead to that name.
		if ts, err := b.tgt.syms.Lookup(t.name, ""); err == nil && ts.Value == tAddr {
			return nil
		}
		if name, ok := b.tgt.pltName(tAddr); ok {
			if name != "" && name != t.name {
				return fail(off, "refers to %s, the target's code goes through the PLT entry of %s at %#x", t.name, name, tAddr)
			}
			return nil
		}
		if ts, err := b.tgt.syms.Lookup(t.name, ""); err == nil && ts.Type != elf.STT_GNU_IFUNC {
			return fail(off, "refers to %s at %#x in the target, where the target's %s is at %#x", t.name, tAddr, t.name, ts.Value)
		}
		return nil
	}
	if t.sec.merge() {
		want := cstring(t.sec, t.value)
		if !t.sec.strings() {
			want = t.sec.bytesAt(t.value, max(t.sec.entsize, 1))
		}
		if got, ok := b.tgt.read(tAddr, uint64(len(want))); !ok || !bytes.Equal(got, want) {
			return fail(off, "refers to constant %q, the target's bytes there differ", want)
		}
		return nil
	}
	if err := c.checkContents(off, t, tAddr); err != nil {
		return err
	}
	if t.typ == elf.STT_SECTION || generatedConst(t) {
		return nil
	}
	ts, err := b.tgt.lookup(t, c.u.orig.file)
	if err != nil {
		return nil // checked when the patch binds it
	}
	if ts.Value != tAddr {
		if r.cls.call && !t.local() {
			if name, ok := b.tgt.pltName(tAddr); ok && name != "" && name != t.name {
				return fail(off, "calls %s, the target's code goes through the PLT entry of %s at %#x", t.name, name, tAddr)
			}
			return nil // a call through the PLT
		}
		return fail(off, "refers to %s at %#x in the target, where the target's %s is at %#x", t.name, tAddr, t.name, ts.Value)
	}
	c.observed[t] = tAddr
	return nil
}

// checkContents compares read-only data the function refers to with the
// target's bytes where its code points: a compiler-made table (CSWTCH, a
// jump table reached through its section) is not bound to the target but
// copied into the patch, so only its contents say whether the target's
// code reads the same values. A section symbol stands for the whole
// section, which the linker copies as it is; a named object for its own
// bytes. Fields a relocation fills are not compared.
func (c *preCheck) checkContents(off int, t *symbol, tAddr uint64) error {
	sec := t.sec
	if sec == nil || sec.data == nil || !sec.alloc() || sec.write() || sec.exec() || sec.tls() || sec.merge() {
		return nil
	}
	lo, hi := t.value, uint64(len(sec.data))
	if t.typ != elf.STT_SECTION && t.size > 0 {
		hi = min(t.value+t.size, hi)
	}
	if t.typ == elf.STT_SECTION {
		lo = 0
	}
	if lo >= hi {
		return nil
	}
	got, ok := c.b.tgt.read(tAddr, hi-lo)
	if !ok {
		return c.fail(off, "refers to %s, which is not in a loaded segment of the target at %#x", t.name, tAddr)
	}
	want := append([]byte(nil), sec.data[lo:hi]...)
	got = append([]byte(nil), got...)
	for _, r := range sec.relocs {
		for k := r.off; k < r.off+uint64(max(r.cls.size, 0)); k++ {
			if k >= lo && k < hi {
				want[k-lo], got[k-lo] = 0, 0
			}
		}
	}
	if !bytes.Equal(want, got) {
		name := t.name
		if t.typ == elf.STT_SECTION {
			name = "section " + sec.name
		}
		return c.fail(off, "refers to read-only data %s, whose contents differ in the target at %#x", name, tAddr)
	}
	return nil
}

// runPreAMD64 matches x86-64 code.
func runPreAMD64(c *preCheck, obj, tgt []byte) error {
	b, base, tgtAddr, fail, relocsIn, checkSym, sec := c.b, c.base, c.tgtAddr, c.fail, c.relocsIn, c.checkSym, c.sec
	type pending struct {
		at      int
		objDest int
		tgtDest uint64
	}
	var pend []pending
	objToTgt := map[int]int{}

	var j int
	// checkGOT checks a GOT-relative field o bytes into the instruction at
	// i (j in the target): as linked it leads to the symbol's GOT slot or,
	// relaxed to lea or addr32 call, to the symbol itself.
	checkGOT := func(i int, r reloc, o int) error {
		if !r.cls.got || !r.cls.pcRel || r.cls.size != 4 || o < 2 || j+o+4 > len(tgt) {
			return nil
		}
		t, _ := r.target()
		if t.typ == elf.STT_SECTION || t.sec == sec {
			return nil
		}
		addr := tgtAddr + uint64(j+o) + uint64(int64(int32(binary.LittleEndian.Uint32(tgt[j+o:])))) - uint64(r.addend)
		if bytes.Equal(obj[i:i+o], tgt[j:j+o]) {
			if name, ok := b.tgt.got[addr]; ok && name != t.name {
				return fail(i, "refers to %s through the GOT, the target's code reads the GOT slot of %s at %#x", t.name, name, addr)
			}
			return nil
		}
		if op := tgt[j+o-2 : j+o]; op[0] == 0x8d || (op[0] == 0x67 && op[1] == 0xe8) {
			return checkSym(i, r, addr)
		}
		return nil
	}
	i := 0
	j = 0
	for {
		i, j = skipNops(obj, i), skipNops(tgt, j)
		if i >= len(obj) || j >= len(tgt) {
			break
		}
		objToTgt[i] = j
		rs := relocsIn(i, i+16)
		// General- and local-dynamic TLS sequences are rewritten whole by
		// the linker: skip them as units.
		if n := tlsSequence(obj[i:], rs, i, base); n > 0 {
			if j+n > len(tgt) {
				return fail(i, "thread-local access sequence runs past the target function")
			}
			i, j = i+n, j+n
			continue
		}
		oi, err := x86asm.Decode(obj[i:], 64)
		if err != nil {
			return fail(i, "cannot decode the original build's instruction: %v", err)
		}
		ti, err := x86asm.Decode(tgt[j:], 64)
		if err != nil {
			return fail(i, "cannot decode the target's instruction at %#x: %v", tgtAddr+uint64(j), err)
		}
		rs = relocsIn(i, i+oi.Len)
		same := oi.Len == ti.Len
		relaxed := false
		for _, r := range rs {
			if r.cls.got || elf.R_X86_64(r.typ) == elf.R_X86_64_GOTTPOFF {
				relaxed = true
			}
		}
		if same {
			ob, tb := append([]byte(nil), obj[i:i+oi.Len]...), append([]byte(nil), tgt[j:j+ti.Len]...)
			for _, r := range rs {
				o := int(r.off-base) - i
				n := r.cls.size
				lo := o
				if relaxed {
					lo = 0 // the linker may rewrite opcode and ModRM
				}
				for k := lo; k < o+n && k < len(ob); k++ {
					ob[k], tb[k] = 0, 0
				}
			}
			same = bytes.Equal(ob, tb)
		}
		switch {
		case same && isRelBranch(oi) && len(rs) == 0:
			pend = append(pend, pending{i, i + oi.Len + int(relOf(oi)), tgtAddr + uint64(j+ti.Len) + uint64(relOf(ti))})
		case same:
			for _, r := range rs {
				if relaxed {
					if err := checkGOT(i, r, int(r.off-base)-i); err != nil {
						return err
					}
					continue
				}
				o := int(r.off-base) - i
				p := tgtAddr + uint64(j+o)
				var addr uint64
				switch {
				case r.cls.pcRel && r.cls.size == 4:
					addr = p + uint64(int64(int32(binary.LittleEndian.Uint32(tgt[j+o:])))) - uint64(r.addend)
				case elf.R_X86_64(r.typ) == elf.R_X86_64_32 || elf.R_X86_64(r.typ) == elf.R_X86_64_32S:
					addr = uint64(int64(int32(binary.LittleEndian.Uint32(tgt[j+o:])))) - uint64(r.addend)
				case elf.R_X86_64(r.typ) == elf.R_X86_64_64:
					addr = binary.LittleEndian.Uint64(tgt[j+o:]) - uint64(r.addend)
				default:
					continue
				}
				if t, d := r.target(); t.sec == sec && isRelBranch(oi) {
					// A call or jump to the function itself or a label in it.
					pend = append(pend, pending{i, int(t.value-base) + int(d) + 4, tgtAddr + uint64(j+ti.Len) + uint64(relOf(ti))})
					continue
				}
				if err := checkSym(i, r, addr); err != nil {
					return err
				}
			}
		case isRelBranch(oi) && isRelBranch(ti) && sameBranch(oi, ti):
			dest := tgtAddr + uint64(j+ti.Len) + uint64(relOf(ti))
			if len(rs) == 0 {
				pend = append(pend, pending{i, i + oi.Len + int(relOf(oi)), dest})
				break
			}
			r := rs[0]
			// The field ends the instruction: dest = S + A + 4.
			if t, d := r.target(); t.sec == sec {
				pend = append(pend, pending{i, int(t.value-base) + int(d) + 4, dest})
				break
			}
			if err := checkSym(i, r, dest-uint64(r.addend)-4); err != nil {
				return err
			}
		case relaxed && oi.Op == x86asm.JMP && ti.Op == x86asm.JMP && oi.Len == ti.Len+1:
			// jmp *foo@GOTPCREL(%rip) relaxed to jmp foo; nop.
		default:
			return fail(i, "the original build has %q, the target has %q at %#x",
				x86asm.GNUSyntax(oi, uint64(i), nil), x86asm.GNUSyntax(ti, tgtAddr+uint64(j), nil), tgtAddr+uint64(j))
		}
		i += oi.Len
		j += ti.Len
	}
	if i < len(obj) {
		return fail(i, "the target's function is shorter")
	}
	if j < len(tgt) {
		return fail(i, "the target's function is longer (%d more bytes at %#x)", len(tgt)-j, tgtAddr+uint64(j))
	}
	for _, p := range pend {
		od := skipNops(obj, p.objDest)
		tj, ok := objToTgt[od]
		if od == len(obj) {
			tj, ok = len(tgt), true
		}
		if !ok {
			return fail(p.at, "branch to +%#x, which is not an instruction of the target's function", p.objDest)
		}
		got := int(p.tgtDest - tgtAddr)
		if got >= 0 && got <= len(tgt) {
			got = skipNops(tgt, got)
		}
		if got != tj {
			return fail(p.at, "branch goes to %#x in the target, the original build's destination corresponds to %#x", p.tgtDest, tgtAddr+uint64(tj))
		}
	}
	return nil
}

func localFile(s *symbol, file string) string {
	if s.local() {
		return file
	}
	return ""
}

// skipNops returns the offset of the first instruction at or after off
// that is not padding.
func skipNops(code []byte, off int) int {
	for off < len(code) {
		in, err := x86asm.Decode(code[off:], 64)
		if err != nil || !isNop(in) {
			return off
		}
		off += in.Len
	}
	return off
}

func isNop(in x86asm.Inst) bool {
	if in.Op == x86asm.NOP {
		return true
	}
	if in.Op == x86asm.XCHG && in.Args[0] != nil && in.Args[0] == in.Args[1] {
		return true
	}
	// lea 0(%rsi,%riz,1),%rsi and friends are not emitted on x86-64.
	return false
}

func isRelBranch(in x86asm.Inst) bool {
	if in.Op != x86asm.CALL && in.Op != x86asm.JMP && !isJcc(in.Op) {
		return false
	}
	_, ok := in.Args[0].(x86asm.Rel)
	return ok
}

func relOf(in x86asm.Inst) int64 { return int64(in.Args[0].(x86asm.Rel)) }

func sameBranch(a, b x86asm.Inst) bool { return a.Op == b.Op }

func isJcc(op x86asm.Op) bool {
	switch op {
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JNE, x86asm.JG, x86asm.JGE,
		x86asm.JL, x86asm.JLE, x86asm.JO, x86asm.JNO, x86asm.JP, x86asm.JNP, x86asm.JS, x86asm.JNS,
		x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ:
		return true
	}
	return false
}

// tlsSequence returns the length of a general- or local-dynamic TLS
// access starting at i (16 or 12 bytes), or 0.
func tlsSequence(code []byte, rs []reloc, i int, base uint64) int {
	for _, r := range rs {
		o := int(r.off-base) - i
		switch {
		case elf.R_X86_64(r.typ) == elf.R_X86_64_TLSGD && o == 4 && len(code) >= 16 && code[0] == 0x66:
			return 16
		case elf.R_X86_64(r.typ) == elf.R_X86_64_TLSLD && o == 3 && len(code) >= 12:
			return 12
		}
	}
	return 0
}
