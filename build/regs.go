package build

import (
	"debug/elf"
	"fmt"
	"sort"
	"strings"
)

// Interprocedural register allocation (gcc's -fipa-ra, on at -O2) lets a
// caller keep values in call-clobbered registers across a direct call to a
// function of the same translation unit that gcc has seen not to write
// them. Where the object the patch is cut from is compiled otherwise than
// the target's (aarch64: without section anchors, which changes which
// registers a function needs), two things can break, and both are refused
// (register-use):
//
//   - a replaced function's new code writes a call-clobbered register the
//     target's version did not, while a caller in the target that is not
//     replaced was compiled to keep a value there;
//   - a replaced or new function calls one the patch leaves to the
//     target, whose code writes a register the fixed build's compile of
//     it did not, and the new caller keeps a value there.
//
// Registers are bits of a machine's numbering (aarch64: x0-x30 in bits
// 0-30, v0-v31 in bits 32-63); machine.clobberable are those a caller may
// be compiled to keep across such a call. What callers assumed is taken
// from below (the registers a function certainly writes, with its
// callees' in the same object, and every clobberable register for a call
// out of the object or through a register), what will run from above
// (every register an instruction may write).
//
// On x86-64 the object the patch is cut from is the one the target was
// built from, and the whole file is compiled again with the fix: a caller
// whose code depends on a callee's registers changes with them and is
// replaced too, so nothing needs checking there (TestIPARACallerChanged).

// fnNode is one function of an object for the register check: its
// sections (a cold part is part of its function) and direct calls.
type fnNode struct {
	sym   *symbol
	calls []string // functions of the same object it calls or jumps to
	far   bool     // it calls out of the object or through a register
	sure  uint64   // registers it certainly writes
	maybe uint64   // registers it may write as well
}

// funcNodes describes every function of an object, under the names
// nameOf gives them.
func funcNodes(o *object, m *machine, nameOf func(*symbol) string) map[string]*fnNode {
	out := map[string]*fnNode{}
	for _, sec := range o.secs {
		if !sec.exec() || !sec.alloc() || sec.data == nil {
			continue
		}
		p := primary(sec)
		if p == nil {
			continue
		}
		name := nameOf(p)
		n := out[name]
		if n == nil {
			n = &fnNode{}
			out[name] = n
		}
		if !isCold(p.name) {
			n.sym = p
		}
		sure, maybe, indirect := m.regWrites(sec)
		n.sure, n.maybe, n.far = n.sure|sure, n.maybe|maybe, n.far || indirect
		for _, r := range sec.relocs {
			if !r.cls.call && !m.branch(r.typ) {
				continue
			}
			t, _ := r.target()
			if t.sec == sec {
				continue
			}
			if t.defined() && t.sec != nil && t.sec.exec() && !isFunc(t) {
				t = primary(t.sec)
			}
			if t == nil || !t.defined() || t.sec == nil || !t.sec.exec() {
				n.far = true
				continue
			}
			if c := nameOf(t); c != name {
				n.calls = append(n.calls, c)
			}
		}
	}
	return out
}

// regFixpoint is, for each function, the union of own(n) and its callees'
// sets, a least fixpoint (a recursive cycle adds nothing of its own); all
// for a function that calls out of the object or one not in nodes.
func regFixpoint(nodes map[string]*fnNode, own func(*fnNode) uint64, all uint64) map[string]uint64 {
	out := map[string]uint64{}
	for name, n := range nodes {
		out[name] = own(n) & all
		if n.far {
			out[name] = all
		}
	}
	for changed := true; changed; {
		changed = false
		for name, n := range nodes {
			v := out[name]
			for _, c := range n.calls {
				cv, ok := out[c]
				if !ok {
					cv = all
				}
				v |= cv
			}
			if v != out[name] {
				out[name], changed = v, true
			}
		}
	}
	return out
}

// checkRegisterUse refuses a patch whose functions and the target's
// callers or callees disagree about the registers a call clobbers (see
// above). It applies to units whose analysis object is not the object
// the target was built from.
func (b *builder) checkRegisterUse(units []*unit, reps []*replacement) []Refusal {
	if b.tgt.mach.regWrites == nil {
		return nil
	}
	replacedAt := map[uint64]bool{}
	for _, r := range reps {
		replacedAt[r.tsym.Value] = true
	}
	var out []Refusal
	for _, u := range units {
		if u.real != nil && u.orig != nil {
			out = append(out, b.checkUnitRegisters(u, replacedAt)...)
		}
	}
	return out
}

func (b *builder) checkUnitRegisters(u *unit, replacedAt map[uint64]bool) []Refusal {
	m := b.tgt.mach
	all := m.clobberable
	strip := func(s *symbol) string { return coldRE.ReplaceAllString(s.name, "") }
	// The fixed object's functions go by the names they have in the
	// original, where they have one.
	fixedName := func(s *symbol) string {
		if o := u.corr[s]; o != nil {
			return strip(o)
		}
		return strip(s)
	}
	real, patched := funcNodes(u.real, m, strip), funcNodes(u.patched, m, fixedName)
	replaced, added := map[string]bool{}, map[string]bool{}
	for name, n := range patched {
		if n.sym == nil {
			continue
		}
		if u.corr[n.sym] == nil {
			added[name] = true
			continue
		}
		if rn := real[name]; rn != nil && rn.sym != nil {
			if ts, err := b.tgt.lookup(rn.sym, u.orig.file); err == nil && replacedAt[ts.Value] {
				replaced[name] = true
			}
		}
	}
	// What will run: the fixed build's code for replaced and new
	// functions, the target's for the rest; from above.
	world := map[string]*fnNode{}
	for name, n := range real {
		world[name] = n
	}
	for name, n := range patched {
		if replaced[name] || added[name] {
			world[name] = n
		}
	}
	runs := regFixpoint(world, func(n *fnNode) uint64 { return n.sure | n.maybe }, all)
	// What callers were compiled for: from below.
	certain := func(n *fnNode) uint64 { return n.sure }
	assumedTarget, assumedFixed := regFixpoint(real, certain, all), regFixpoint(patched, certain, all)
	qualified := func(s *symbol) string {
		if s.local() && u.orig.file != "" {
			return s.name + "@" + u.orig.file
		}
		return s.name
	}
	var out []Refusal
	// Callers the target keeps, of functions the patch replaces.
	for _, name := range sortedNames(replaced) {
		extra := runs[name] &^ assumedTarget[name]
		if extra == 0 || real[name] == nil || real[name].sym == nil {
			continue
		}
		var callers []string
		for cname, c := range real {
			if replaced[cname] || cname == name {
				continue
			}
			for _, t := range c.calls {
				if t == name {
					callers = append(callers, cname)
					break
				}
			}
		}
		if len(callers) == 0 {
			continue
		}
		sort.Strings(callers)
		out = append(out, Refusal{Kind: "register-use", Symbol: qualified(real[name].sym),
			Reason: fmt.Sprintf("the new version writes %s, which the target's does not; gcc's -fipa-ra compiled its callers %s, which the patch leaves as they are, to keep values there across the call (build the target with -fno-ipa-ra, or fix those callers too so that they are replaced)",
				m.regNames(extra), strings.Join(callers, ", "))})
	}
	// Functions the target keeps, called by the patch's code.
	fixed := sortedNames(replaced)
	fixed = append(fixed, sortedNames(added)...)
	for _, name := range fixed {
		n := patched[name]
		if n.sym == nil {
			continue
		}
		reported := map[string]bool{}
		for _, c := range n.calls {
			if replaced[c] || added[c] || reported[c] || real[c] == nil {
				continue
			}
			extra := runs[c] &^ assumedFixed[c]
			if extra == 0 {
				continue
			}
			reported[c] = true
			out = append(out, Refusal{Kind: "register-use", Symbol: qualified(n.sym),
				Reason: fmt.Sprintf("calls %s, whose code in the target writes %s; gcc's -fipa-ra compiled the new version expecting it not to (build the target with -fno-ipa-ra)",
					c, m.regNames(extra))})
		}
	}
	return out
}

func sortedNames(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// regNamesARM64 lists the registers of a set: x0-x30, v0-v31.
func regNamesARM64(set uint64) string {
	var out []string
	for i := 0; i < 64; i++ {
		if set&(1<<i) == 0 {
			continue
		}
		if i < 32 {
			out = append(out, fmt.Sprintf("x%d", i))
		} else {
			out = append(out, fmt.Sprintf("v%d", i-32))
		}
	}
	return strings.Join(out, ", ")
}

// branchARM64 reports the relocations of branches that may leave a
// function: calls, tail calls and conditional tail calls.
func branchARM64(t uint32) bool {
	switch elf.R_AARCH64(t) {
	case elf.R_AARCH64_CALL26, elf.R_AARCH64_JUMP26, elf.R_AARCH64_CONDBR19, elf.R_AARCH64_TSTBR14:
		return true
	}
	return false
}
