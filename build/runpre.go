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
	obj := fn.sec.data[fn.value : fn.value+fn.size]
	c := &preCheck{b: b, u: u, fn: fn, sec: fn.sec, base: fn.value, tgtAddr: tgtAddr, obj: obj, tgt: tgt, observed: map[*symbol]uint64{}}
	if err := u.orig.mach.runPre(c, obj, tgt); err != nil {
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
	obj, tgt []byte // the two functions' code
	observed map[*symbol]uint64
	entries  []tableEntry // jump-table entries, checked once the instructions correspond
}

// tableEntry is one entry of a jump table the function refers to: where
// the original build's entry leads in the function, and where the
// target's leads.
type tableEntry struct {
	at      int    // the instruction that refers to the table
	table   string // for messages: the table's section and offset
	index   int
	objDest int    // offset in the function
	tgtDest uint64 // address in the target; with adr >= 0, relative to the ADR's destination
	adr     int    // aarch64: the original's ADR whose target counterpart gives the entries' base; else -1
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
		// The string or constant referred to: at a named label (x86-64's
		// .LC), or at an offset into the section, whose symbol the
		// assembler names instead (aarch64). A field followed by an
		// immediate has an addend short of the label (x86-64): the label.
		in := uint64(max(d+r.cls.pcAdjust, 0))
		want := cstring(t.sec, t.value+in)
		if !t.sec.strings() {
			want = t.sec.bytesAt(t.value+in, max(t.sec.entsize, 1))
		}
		if got, ok := b.tgt.read(tAddr+in, uint64(len(want))); !ok || !bytes.Equal(got, want) {
			return fail(off, "refers to constant %q, the target's bytes there differ", want)
		}
		return nil
	}
	if err := c.checkContents(off, t, d+r.cls.pcAdjust, tAddr); err != nil {
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
// code reads the same values. A named object is compared whole; through a
// section symbol, the anonymous data at the offset referred to (in, from
// the symbol), up to the next named symbol or place another relocation
// refers to (another function's jump table, say). Fields a relocation
// fills are not compared, except the entries of a jump table, which are
// code addresses: those of the function's own tables (relocated on
// x86-64, offsets from an ADR's destination on aarch64) are checked
// through the instruction correspondence once the code has been matched
// (checkTables), since padding may move the code they lead to.
func (c *preCheck) checkContents(off int, t *symbol, in int64, tAddr uint64) error {
	sec := t.sec
	if sec == nil || sec.data == nil || !sec.alloc() || sec.write() || sec.exec() || sec.tls() || sec.merge() {
		return nil
	}
	lo, hi := t.value, uint64(len(sec.data))
	if t.typ != elf.STT_SECTION && t.size > 0 {
		hi = min(t.value+t.size, hi)
	}
	if t.typ == elf.STT_SECTION {
		lo = uint64(max(in, 0))
		hi = regionEnd(sec, lo)
	}
	if lo >= hi {
		return nil
	}
	at := tAddr + lo - t.value // the target's address of lo
	name := t.name
	if t.typ == elf.STT_SECTION {
		name = fmt.Sprintf("section %s+%#x", sec.name, lo)
	}
	got, ok := c.b.tgt.read(at, hi-lo)
	if !ok {
		return c.fail(off, "refers to %s, which is not in a loaded segment of the target at %#x", name, at)
	}
	want := append([]byte(nil), sec.data[lo:hi]...)
	got = append([]byte(nil), got...)
	mask := func(k, n uint64) {
		for ; n > 0; k, n = k+1, n-1 {
			if k >= lo && k < hi {
				want[k-lo], got[k-lo] = 0, 0
			}
		}
	}
	for _, r := range sec.relocs {
		if r.off < lo || r.off >= hi {
			continue
		}
		if r.sym.sec == c.sec {
			c.tableEntryAMD64(off, name, r, lo, at, got[r.off-lo:])
		}
		mask(r.off, uint64(max(r.cls.size, 0)))
	}
	if t.typ == elf.STT_SECTION && c.u.orig.mach.em == elf.EM_AARCH64 {
		if d, ok := c.dispatchFor(off); ok {
			relocated := map[uint64]bool{}
			for _, r := range sec.relocs {
				relocated[r.off] = true
			}
			n := 0
			for k := lo; k+d.size <= hi; k, n = k+d.size, n+1 {
				if relocated[k] {
					continue // masked above
				}
				e := a64Entry(sec.data[k:], d)
				ev := a64Entry(got[k-lo:], d)
				dest := d.anchor + int(e)
				if dest < 0 || dest > len(c.obj) {
					// No entry of this function's (padding or other
					// data): compared as it is.
					continue
				}
				c.entries = append(c.entries, tableEntry{at: off, table: name, index: n, objDest: dest, tgtDest: uint64(ev), adr: d.at + 4})
				mask(k, d.size)
			}
		}
	}
	if !bytes.Equal(want, got) {
		return c.fail(off, "refers to read-only data %s, whose contents differ in the target at %#x", name, at)
	}
	return nil
}

// regionEnd is where anonymous data at lo of sec ends: at the next named
// symbol, at the next place a relocation of the object refers to, or at
// the section's end.
func regionEnd(sec *section, lo uint64) uint64 {
	hi := uint64(len(sec.data))
	for _, s := range sec.syms {
		if s.value > lo && s.value < hi {
			hi = s.value
		}
	}
	for _, os := range sec.obj.secs {
		if os == nil {
			continue
		}
		for _, r := range os.relocs {
			if r.sym == nil || r.sym.sec != sec {
				continue
			}
			if p := int64(r.sym.value) + r.pointsAt(); p > int64(lo) && uint64(p) < hi {
				hi = uint64(p)
			}
		}
	}
	return hi
}

// tableEntryAMD64 records an x86-64 jump-table entry, a relocation against
// the function's own section in a table at lo (the target's copy at tbl,
// whose bytes at the entry are field): gcc's PC-relative entries (.long
// .Lcase-.Ltable, R_X86_64_PC32) hold the distance from the table, absolute
// ones (.quad .Lcase, R_X86_64_64; R_X86_64_32S) the address.
func (c *preCheck) tableEntryAMD64(at int, table string, r reloc, lo, tbl uint64, field []byte) {
	if c.u.orig.mach.em != elf.EM_X86_64 {
		return
	}
	dest := int64(r.sym.value) + r.addend
	var tgtDest uint64
	switch elf.R_X86_64(r.typ) {
	case elf.R_X86_64_PC32:
		if len(field) < 4 {
			return
		}
		// In the object: .Lcase - .Ltable = S + A - P, with the table at lo.
		dest -= int64(r.off - lo)
		tgtDest = tbl + uint64(le32s(field))
	case elf.R_X86_64_64:
		v, ok := c.b.tgt.gotValue(tbl + r.off - lo)
		if !ok {
			return
		}
		tgtDest = v
	case elf.R_X86_64_32S:
		if len(field) < 4 {
			return
		}
		tgtDest = uint64(le32s(field))
	case elf.R_X86_64_32:
		if len(field) < 4 {
			return
		}
		tgtDest = uint64(binary.LittleEndian.Uint32(field))
	default:
		return
	}
	c.entries = append(c.entries, tableEntry{at: at, table: table, index: int(r.off-lo) / max(r.cls.size, 1), objDest: int(dest) - int(c.base), tgtDest: tgtDest, adr: -1})
}

// checkTables checks that every jump-table entry leads to the target's
// instruction that corresponds to the original's (objToTgt, with skip
// passing the machine's padding).
func (c *preCheck) checkTables(objToTgt map[int]int, skip func([]byte, int) int) error {
	for _, e := range c.entries {
		dest := e.tgtDest
		if e.adr >= 0 {
			j, ok := objToTgt[e.adr]
			if !ok || j+4 > len(c.tgt) || !isADR(binary.LittleEndian.Uint32(c.tgt[j:])) {
				return c.fail(e.at, "jump table %s: the target has no ADR for the table's base", e.table)
			}
			dest = c.tgtAddr + uint64(j) + uint64(a64ADRImm(binary.LittleEndian.Uint32(c.tgt[j:]))) + e.tgtDest
		}
		if e.objDest < 0 || e.objDest > len(c.obj) {
			return c.fail(e.at, "jump table %s: entry %d leads out of the function (+%#x)", e.table, e.index, e.objDest)
		}
		od := skip(c.obj, e.objDest)
		tj, ok := objToTgt[od]
		if od == len(c.obj) {
			tj, ok = len(c.tgt), true
		}
		if !ok {
			return c.fail(e.at, "jump table %s: entry %d leads to +%#x, which is not an instruction of the target's function", e.table, e.index, e.objDest)
		}
		got := int(dest - c.tgtAddr)
		if got >= 0 && got <= len(c.tgt) {
			got = skip(c.tgt, got)
		}
		if got != tj {
			return c.fail(e.at, "jump table %s: entry %d leads to %#x in the target, the original build's case corresponds to %#x", e.table, e.index, dest, c.tgtAddr+uint64(tj))
		}
	}
	return nil
}

// runPreAMD64 matches x86-64 code.
func runPreAMD64(c *preCheck, obj, tgt []byte) error {
	base, tgtAddr, fail, relocsIn, checkSym, sec := c.base, c.tgtAddr, c.fail, c.relocsIn, c.checkSym, c.sec
	var pend []pendingBranch
	objToTgt := map[int]int{}
	ld := ldUnseen // what became of the function's local-dynamic sequence

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
			// Not relaxed: the slot is named by its dynamic relocation or
			// holds the address (RELATIVE in a position-independent
			// executable, or written by the linker).
			return c.checkGOTSlot(i, r, addr)
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
			if err := c.tlsSequenceAMD64(i, j, obj[i:i+n], tgt[j:j+n], rs, &ld); err != nil {
				return err
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
			pend = append(pend, pendingBranch{i, i + oi.Len + int(relOf(oi)), tgtAddr + uint64(j+ti.Len) + uint64(relOf(ti))})
		case same:
			for _, r := range rs {
				o := int(r.off-base) - i
				if elf.R_X86_64(r.typ) == elf.R_X86_64_GOTTPOFF {
					if err := c.initialExecAMD64(i, j, o, r, obj, tgt); err != nil {
						return err
					}
					continue
				}
				if relaxed {
					if err := checkGOT(i, r, o); err != nil {
						return err
					}
					continue
				}
				if err := c.tlsFieldAMD64(i, r, tgt[j+o:], ld); err != nil {
					return err
				}
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
					pend = append(pend, pendingBranch{i, int(t.value-base) + int(d) + 4, tgtAddr + uint64(j+ti.Len) + uint64(relOf(ti))})
					continue
				}
				if err := checkSym(i, r, addr); err != nil {
					return err
				}
			}
		case isRelBranch(oi) && isRelBranch(ti) && sameBranch(oi, ti):
			dest := tgtAddr + uint64(j+ti.Len) + uint64(relOf(ti))
			if len(rs) == 0 {
				pend = append(pend, pendingBranch{i, i + oi.Len + int(relOf(oi)), dest})
				break
			}
			r := rs[0]
			// The field ends the instruction: dest = S + A + 4.
			if t, d := r.target(); t.sec == sec {
				pend = append(pend, pendingBranch{i, int(t.value-base) + int(d) + 4, dest})
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
	if err := c.checkBranches(obj, tgt, pend, objToTgt, skipNops); err != nil {
		return err
	}
	return c.checkTables(objToTgt, skipNops)
}

// pendingBranch is a branch of the original function to a place inside
// it: at its offset at, to objDest; the target's one goes to tgtDest.
type pendingBranch struct {
	at      int
	objDest int
	tgtDest uint64
}

// checkBranches checks, once every instruction is matched, that each
// branch inside the function lands in the target on the instruction that
// corresponds to its destination in the original; skip passes over
// alignment padding.
func (c *preCheck) checkBranches(obj, tgt []byte, pend []pendingBranch, objToTgt map[int]int, skip func([]byte, int) int) error {
	for _, p := range pend {
		od := skip(obj, p.objDest)
		tj, ok := objToTgt[od]
		if od == len(obj) {
			tj, ok = len(tgt), true
		}
		if !ok {
			return c.fail(p.at, "branch to +%#x, which is not an instruction of the target's function", p.objDest)
		}
		got := int(p.tgtDest - c.tgtAddr)
		if got >= 0 && got <= len(tgt) {
			got = skip(tgt, got)
		}
		if got != tj {
			return c.fail(p.at, "branch goes to %#x in the target, the original build's destination corresponds to %#x", p.tgtDest, c.tgtAddr+uint64(tj))
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

// tlsOffset is the offset of the variable r refers to (plus the offset
// into it) in the target's thread-local block.
func (c *preCheck) tlsOffset(i int, r reloc) (uint64, error) {
	t, d := r.target()
	ts, err := c.b.tgt.lookup(t, c.u.orig.file)
	if !t.defined() {
		ts, err = c.b.tgt.syms.Lookup(t.name, "")
	}
	if err != nil || ts.Type != elf.STT_TLS || ts.Section == elf.SHN_UNDEF || !c.b.tgt.tlsOK {
		return 0, c.fail(i, "reads thread-local %s, which the target does not define; its code cannot use local exec", t.name)
	}
	return ts.Value + uint64(d+r.cls.pcAdjust), nil
}

// checkTLSSlot checks a GOT entry the target's code reads a thread-local
// variable through: the thread-pointer offset (initial exec) or the
// descriptor of the variable (kindDesc).
func (c *preCheck) checkTLSSlot(at int, r reloc, slot uint64, kind a64Kind) error {
	t, _ := r.target()
	m := c.b.tgt.mach
	want := m.tpOff64
	if kind == kindDesc {
		want = m.tlsDesc
	}
	if dr, ok := c.b.tgt.dyn[slot]; ok {
		if dr.Type != want {
			return c.fail(at, "reads thread-local %s through the GOT, the target's slot at %#x has relocation %v", t.name, slot, m.relName(dr.Type))
		}
		if dr.Symbol != "" {
			if dr.Symbol != t.name {
				return c.fail(at, "reads thread-local %s, the target's code reads %s's GOT entry at %#x", t.name, dr.Symbol, slot)
			}
			return nil
		}
		// The module's own variable: the addend is its offset in the block.
		off, err := c.tlsOffset(at, r)
		if err != nil {
			return err
		}
		if dr.Addend != off {
			return c.fail(at, "reads thread-local %s, the target's GOT entry at %#x is for offset %#x, not %#x", t.name, slot, dr.Addend, off)
		}
		return nil
	}
	// Resolved by the linker: the slot holds the thread-pointer offset.
	off, err := c.tlsOffset(at, r)
	if err != nil {
		return err
	}
	v, ok := c.b.tgt.read(slot, 8)
	if kind != kindIE || !ok || le64(v) != c.b.tgt.tpOff(off) {
		return c.fail(at, "reads thread-local %s, the target's GOT entry at %#x holds another variable's offset", t.name, slot)
	}
	return nil
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// What the linker made of a function's local-dynamic TLS sequence, which
// says what its DTPOFF32 fields hold.
type ldForm uint8

const (
	ldUnseen  ldForm = iota
	ldKept           // offsets in the module's block
	ldRelaxed        // thread-pointer offsets (local exec)
)

var (
	// mov %fs:0,%rax: the start of every sequence the linker makes of a
	// general- or local-dynamic access in an executable.
	amd64FSBase = []byte{0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0}
	amd64LEAdd  = []byte{0x48, 0x8d, 0x80} // lea imm32(%rax),%rax
	amd64IEAdd  = []byte{0x48, 0x03, 0x05} // add disp32(%rip),%rax
)

func le32s(b []byte) int64 { return int64(int32(binary.LittleEndian.Uint32(b))) }

// maskedEqual compares an instruction sequence of the original build with
// the target's apart from the fields of the relocations rs (at offsets
// from base+i).
func maskedEqual(obj, tgt []byte, rs []reloc, base uint64, i int) bool {
	if len(obj) != len(tgt) {
		return false
	}
	ob, tb := append([]byte(nil), obj...), append([]byte(nil), tgt...)
	for _, r := range rs {
		o := int(r.off-base) - i
		for k := o; k < o+r.cls.size && k >= 0 && k < len(ob); k++ {
			ob[k], tb[k] = 0, 0
		}
	}
	return bytes.Equal(ob, tb)
}

// tlsSequenceAMD64 checks a general- or local-dynamic access (data16 lea
// x@tlsgd(%rip),%rdi; data16 data16 rex64 call __tls_get_addr, or lea
// x@tlsld(%rip),%rdi; call __tls_get_addr) against where the target has
// the variable: kept, it must load the GOT pair of that variable (or the
// module's); in an executable GNU ld turns it into local exec (mov
// %fs:0,%rax; lea tpoff(%rax),%rax) or initial exec (mov %fs:0,%rax; add
// slot(%rip),%rax), whose offset or slot must be the variable's.
func (c *preCheck) tlsSequenceAMD64(i, j int, obj, tgt []byte, rs []reloc, ld *ldForm) error {
	var r reloc
	for _, x := range rs {
		if t := elf.R_X86_64(x.typ); t == elf.R_X86_64_TLSGD || t == elf.R_X86_64_TLSLD {
			r = x
		}
	}
	var seq []reloc
	for _, x := range rs {
		if o := int(x.off-c.base) - i; o >= 0 && o < len(obj) {
			seq = append(seq, x)
		}
	}
	t, _ := r.target()
	kept := maskedEqual(obj, tgt, seq, c.base, i)
	field := int(r.off-c.base) - i
	if elf.R_X86_64(r.typ) == elf.R_X86_64_TLSLD {
		switch {
		case kept:
			slot := c.tgtAddr + uint64(j+field) + uint64(le32s(tgt[field:])) - uint64(r.addend)
			if dr, ok := c.b.tgt.dyn[slot]; !ok || dr.Type != c.b.tgt.mach.dtpMod64 || dr.Symbol != "" {
				return c.fail(i, "local-dynamic access, the target's code does not load its module's GOT entry at %#x", slot)
			}
			*ld = ldKept
		case len(tgt) == 12 && bytes.Equal(tgt[:3], []byte{0x66, 0x66, 0x66}) && bytes.Equal(tgt[3:], amd64FSBase):
			*ld = ldRelaxed
		default:
			return c.fail(i, "local-dynamic access of %s, the target has neither the sequence nor the linker's local-exec form of it", t.name)
		}
		return nil
	}
	switch {
	case kept:
		pair := c.tgtAddr + uint64(j+field) + uint64(le32s(tgt[field:])) - uint64(r.addend)
		return c.checkTLSPair(i, r, pair)
	case len(tgt) == 16 && bytes.Equal(tgt[:9], amd64FSBase) && bytes.Equal(tgt[9:12], amd64LEAdd):
		return c.checkTPOff(i, r, le32s(tgt[12:]))
	case len(tgt) == 16 && bytes.Equal(tgt[:9], amd64FSBase) && bytes.Equal(tgt[9:12], amd64IEAdd):
		return c.checkTLSSlot(i, r, c.tgtAddr+uint64(j+16)+uint64(le32s(tgt[12:])), kindIE)
	}
	return c.fail(i, "general-dynamic access of %s, the target has neither the sequence nor a form the linker makes of it", t.name)
}

// checkTLSPair checks the GOT pair (module, offset) a general-dynamic
// access passes to __tls_get_addr: named by the variable's DTPMOD64, or
// the module's own with the variable's offset in the second slot.
func (c *preCheck) checkTLSPair(at int, r reloc, pair uint64) error {
	t, _ := r.target()
	m := c.b.tgt.mach
	dr, ok := c.b.tgt.dyn[pair]
	if !ok || dr.Type != m.dtpMod64 {
		return c.fail(at, "reads thread-local %s, the target's code passes %#x, which is no module/offset pair of the GOT", t.name, pair)
	}
	if dr.Symbol != "" {
		if dr.Symbol != t.name {
			return c.fail(at, "reads thread-local %s, the target's code reads %s's GOT pair at %#x", t.name, dr.Symbol, pair)
		}
		return nil
	}
	off, err := c.tlsOffset(at, r)
	if err != nil {
		return err
	}
	if d2, ok := c.b.tgt.dyn[pair+8]; ok {
		if d2.Type != m.dtpOff64 || (d2.Symbol != "" && d2.Symbol != t.name) || (d2.Symbol == "" && d2.Addend != off) {
			return c.fail(at, "reads thread-local %s, the target's GOT pair at %#x is for another variable", t.name, pair)
		}
		return nil
	}
	if v, ok := c.b.tgt.read(pair+8, 8); !ok || le64(v) != off {
		return c.fail(at, "reads thread-local %s, the target's GOT pair at %#x is for another variable", t.name, pair)
	}
	return nil
}

// checkTPOff checks a thread-pointer offset in the target's code (local
// exec, or what the linker made of another model) against the variable.
func (c *preCheck) checkTPOff(at int, r reloc, got int64) error {
	off, err := c.tlsOffset(at, r)
	if err != nil {
		return err
	}
	if want := int64(c.b.tgt.tpOff(off)); got != want {
		t, _ := r.target()
		return c.fail(at, "reads thread-local %s at thread-pointer offset %d, the target's code uses %d, another variable's", t.name, want, got)
	}
	return nil
}

// initialExecAMD64 checks an initial-exec access (mov or add
// x@gottpoff(%rip)): kept, it reads the variable's TPOFF64 slot; relaxed
// by the linker (mov $imm, add $imm or lea imm(%reg)), the immediate in
// the same place is the variable's thread-pointer offset.
func (c *preCheck) initialExecAMD64(i, j, o int, r reloc, obj, tgt []byte) error {
	if j+o+4 > len(tgt) || o < 2 {
		return c.fail(i, "initial-exec access that run-pre matching cannot read")
	}
	field := le32s(tgt[j+o:])
	if bytes.Equal(obj[i:i+o], tgt[j:j+o]) {
		return c.checkTLSSlot(i, r, c.tgtAddr+uint64(j+o)+uint64(field)-uint64(r.addend), kindIE)
	}
	return c.checkTPOff(i, r, field)
}

// tlsFieldAMD64 checks the thread-local offsets x86-64 code holds in a
// field: TPOFF32 (local exec) and DTPOFF32 (after a local-dynamic
// sequence: an offset in the module's block, or, relaxed, from the thread
// pointer).
func (c *preCheck) tlsFieldAMD64(i int, r reloc, field []byte, ld ldForm) error {
	switch elf.R_X86_64(r.typ) {
	case elf.R_X86_64_TPOFF32:
		return c.checkTPOff(i, r, le32s(field))
	case elf.R_X86_64_DTPOFF32:
		off, err := c.tlsOffset(i, r)
		if err != nil {
			return err
		}
		got := le32s(field)
		if (ld != ldRelaxed && got == int64(off)) || (ld != ldKept && got == int64(c.b.tgt.tpOff(off))) {
			return nil
		}
		t, _ := r.target()
		return c.fail(i, "reads thread-local %s, the target's code uses offset %d, another variable's", t.name, got)
	}
	return nil
}
