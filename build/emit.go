package build

import (
	"debug/elf"
	"fmt"
	"sort"

	"github.com/hotpatch/hotpatch/target"
)

// replacement is one function of the target the patch redirects.
type replacement struct {
	u       *unit
	patched *symbol // in the patched object
	orig    *symbol // in the original object
	tsym    target.Symbol
	newName string
	code    []byte // the target's bytes
}

// emitter collects what the patch needs, starting from the replaced
// functions and following every relocation.
type emitter struct {
	b        *builder
	out      *outObject
	incl     map[*section]*outSection
	symMap   map[*symbol]*outSym
	undef    map[string]*outSym
	names    map[string]bool // every name defined in the output
	replaced map[*symbol]*replacement
	newGlob  map[string]*symbol
	unitOf   map[*object]*unit
	observed map[*symbol]uint64 // original-object symbol -> target address (from run-pre)
	queue    []*section
	units    []*unit
	eh       *ehFrameOut
	dwRefs   map[string]*outSym
	// layoutDone lists the data sections checkLayout has checked.
	layoutDone map[*section]bool

	added    []string // new functions
	newData  []string
	consts   []string
	refusals []Refusal
	bindings map[string]string // patch reference -> target symbol, for the report
}

func newEmitter(b *builder, units []*unit, reps []*replacement, observed map[*symbol]uint64) *emitter {
	e := &emitter{b: b, out: &outObject{machine: b.tgt.mach.em}, incl: map[*section]*outSection{}, symMap: map[*symbol]*outSym{},
		undef: map[string]*outSym{}, names: map[string]bool{}, replaced: map[*symbol]*replacement{},
		newGlob: map[string]*symbol{}, unitOf: map[*object]*unit{}, observed: observed, bindings: map[string]string{},
		units: units, dwRefs: map[string]*outSym{}, layoutDone: map[*section]bool{}}
	for _, u := range units {
		e.unitOf[u.patched] = u
	}
	for _, r := range reps {
		e.replaced[r.patched] = r
	}
	for _, u := range units {
		for _, s := range u.patched.syms {
			if s.defined() && !s.local() && s.name != "" && s.typ != elf.STT_SECTION && u.corr[s] == nil {
				if _, dup := e.newGlob[s.name]; !dup {
					if _, err := b.tgt.syms.Lookup(s.name, ""); err != nil {
						e.newGlob[s.name] = s
					}
				}
			}
		}
	}
	return e
}

func (e *emitter) unique(name string) string {
	n := name
	for i := 2; e.names[n]; i++ {
		n = fmt.Sprintf("%s.%d", name, i)
	}
	e.names[n] = true
	return n
}

// include copies a section of a patched object into the output.
func (e *emitter) include(sec *section) *outSection {
	if os := e.incl[sec]; os != nil {
		return os
	}
	os := &outSection{name: sec.name, typ: sec.typ, flags: sec.flags &^ elf.SHF_GROUP, align: sec.align, entsize: sec.entsize,
		size: sec.size, data: sec.data}
	e.out.addSection(os)
	e.incl[sec] = os
	e.symMap[sec.secSym] = os.secSym
	u := e.unitOf[sec.obj]
	for _, s := range sec.syms {
		o := &outSym{name: s.name, value: s.value, size: s.size, typ: s.typ, bind: s.bind, other: s.other, sec: os}
		if r := e.replaced[s]; r != nil {
			o.name, o.bind = r.newName, elf.STB_GLOBAL
		} else if isFunc(s) && u.corr[s] != nil && !isCold(s.name) {
			// An alias of a replaced function: the target has its own.
			o.name, o.bind = e.unique(s.name+".hotpatch"), elf.STB_LOCAL
		} else if s.local() {
			o.name = s.name
		} else {
			if e.names[s.name] {
				o.name, o.bind = e.unique(s.name+".dup"), elf.STB_LOCAL
			}
		}
		e.names[o.name] = true
		e.out.syms = append(e.out.syms, o)
		e.symMap[s] = o
		switch {
		case e.replaced[s] != nil || u.corr[s] != nil || isDWRef(s):
		case isFunc(s) && !isCold(s.name):
			e.added = append(e.added, u.qualified(s))
		case isData(s) && !generatedConst(s) && !sec.merge() && sec.write():
			e.newData = append(e.newData, u.qualified(s))
		}
	}
	e.queue = append(e.queue, sec)
	return os
}

// run includes the replaced functions and everything they need.
func (e *emitter) run() error {
	var reps []*replacement
	for _, r := range e.replaced {
		reps = append(reps, r)
	}
	sort.Slice(reps, func(i, j int) bool { return reps[i].newName < reps[j].newName })
	for _, r := range reps {
		e.names[r.newName] = true
	}
	for _, r := range reps {
		e.include(r.patched.sec)
	}
	if err := e.loadEHFrames(); err != nil {
		return err
	}
	for {
		for len(e.queue) > 0 {
			sec := e.queue[0]
			e.queue = e.queue[1:]
			os := e.incl[sec]
			for _, r := range sec.relocs {
				sym, addend, err := e.resolve(sec, r)
				if err != nil {
					return err
				}
				if sym == nil {
					continue
				}
				os.relocs = append(os.relocs, outReloc{off: r.off, typ: r.typ, sym: sym, addend: addend})
			}
		}
		// The unwind information of the code included so far may bring in
		// more: LSDAs, and what they and the CIEs refer to.
		n, err := e.copyUnwind()
		if err != nil {
			return err
		}
		if n == 0 && len(e.queue) == 0 {
			break
		}
	}
	e.finishUnwind()
	if len(e.refusals) > 0 {
		return &RefusalError{Refusals: e.refusals}
	}
	return nil
}

func (e *emitter) undefined(name string, tls bool) *outSym {
	if s := e.undef[name]; s != nil {
		return s
	}
	s := &outSym{name: name, typ: elf.STT_NOTYPE, bind: elf.STB_GLOBAL}
	if tls {
		s.typ = elf.STT_TLS
	}
	e.undef[name] = s
	e.out.syms = append(e.out.syms, s)
	return s
}

// resolve decides what one relocation of an included section refers to
// in the patch: something the patch carries, or a symbol of the target.
func (e *emitter) resolve(sec *section, r reloc) (*outSym, int64, error) {
	u := e.unitOf[sec.obj]
	t, d := r.target()
	if r.typ == 0 { // R_*_NONE
		return nil, 0, nil
	}
	if isDWRef(t) && t.defined() && t.sec != nil {
		// The patch's own cell, holding the address of the personality
		// routine or type_info it names, which the engine binds.
		return e.dwRef(t), d, nil
	}
	entry := r.pointsAt()
	if r.sym.typ == elf.STT_SECTION {
		entry -= int64(t.value)
	}
	if rep := e.replaced[t]; rep != nil && t.sec != sec && entry == 0 {
		// A reference to a replaced function from elsewhere: its old entry
		// in the target, which is redirected, so that function pointers
		// compare equal to the ones the program already holds.
		return e.bindTarget(u, rep.orig, t, r, d)
	}
	if r.sym.sec != nil && e.incl[r.sym.sec] != nil {
		return e.mapped(r.sym), r.addend, nil
	}
	switch {
	case !t.defined():
		if t.shndx == elf.SHN_COMMON {
			return nil, 0, e.refuse(Refusal{Kind: "common", Symbol: u.qualified(t), Reason: "tentative definition (common symbol); build with -fno-common"})
		}
		if def := e.newGlob[t.name]; def != nil {
			if def.typ == elf.STT_TLS || def.sec.tls() {
				return nil, 0, e.refuse(Refusal{Kind: "new-tls", Symbol: e.unitOf[def.sec.obj].qualified(def), Reason: "new thread-local variable; existing threads have no storage for it"})
			}
			if e.heldWithExisting(def.sec) {
				return nil, 0, e.refuseShared(e.unitOf[def.sec.obj], def)
			}
			e.include(def.sec)
			return e.mapped(def), r.addend, nil
		}
		return e.undefined(t.name, t.typ == elf.STT_TLS || r.cls.tls), r.addend, nil
	case (t.typ == elf.STT_SECTION || isAnchor(t)) && e.heldWithExisting(t.sec):
		// A section anchor (or an offset between variables) in data the
		// target has: bound through a variable of the section, whose
		// distances to the others checkLayout proves.
		v := firstExisting(u, t.sec)
		if err := e.checkLayout(u, t.sec); err != nil || v == nil {
			return nil, 0, err
		}
		off := r.addend
		if isAnchor(r.sym) {
			off += int64(r.sym.value)
		}
		return e.bindTarget(u, u.corr[v], v, r, off-int64(v.value))
	case t.typ == elf.STT_SECTION || t.sec.merge() || generatedConst(t) || isCold(t.name):
		e.include(t.sec)
		return e.mapped(r.sym), r.addend, nil
	case isFunc(t):
		if o := u.corr[t]; o != nil {
			return e.bindTarget(u, o, t, r, d)
		}
		if !t.local() && e.newGlob[t.name] == nil {
			return e.bindTarget(u, t, t, r, d) // exists in the target under its name
		}
		e.include(t.sec)
		return e.mapped(r.sym), r.addend, nil
	case isData(t):
		o := u.corr[t]
		switch {
		case o == nil && !t.local() && e.newGlob[t.name] == nil:
			return e.bindTarget(u, t, t, r, d)
		case o == nil:
			if t.typ == elf.STT_TLS || t.sec.tls() {
				return nil, 0, e.refuse(Refusal{Kind: "new-tls", Symbol: u.qualified(t), Reason: "new thread-local variable; existing threads have no storage for it"})
			}
			if e.heldWithExisting(t.sec) {
				return nil, 0, e.refuseShared(u, t)
			}
			e.include(t.sec)
			return e.mapped(r.sym), r.addend, nil
		case !t.sec.write() && !t.sec.tls() && t.local() && u.dataDiffers(t):
			e.consts = append(e.consts, u.qualified(t))
			e.include(t.sec)
			return e.mapped(r.sym), r.addend, nil
		}
		if r.sym.typ == elf.STT_SECTION || isAnchor(r.sym) {
			if err := e.checkLayout(u, t.sec); err != nil {
				return nil, 0, err
			}
		}
		return e.bindTarget(u, o, t, r, d)
	}
	return nil, 0, fmt.Errorf("%w: %s refers to %s (%v) in a way the builder cannot follow", ErrUnsupported, sec.name, t.name, t.typ)
}

// heldWithExisting reports a writable or thread-local section of a patched
// object that holds a variable the target has: it is never copied. With
// -fdata-sections every variable has a section of its own; without it
// (aarch64, see machineARM64) a file's data shares .data, .bss, .tbss.
func (e *emitter) heldWithExisting(sec *section) bool {
	if sec == nil || sec.exec() || !sec.write() && !sec.tls() {
		return false
	}
	return firstExisting(e.unitOf[sec.obj], sec) != nil
}

// firstExisting is the first variable of sec that the original build has.
func firstExisting(u *unit, sec *section) *symbol {
	for _, s := range sec.syms {
		if isData(s) && u.corr[s] != nil {
			return s
		}
	}
	return nil
}

func (e *emitter) refuseShared(u *unit, t *symbol) error {
	return e.refuse(Refusal{Kind: "new-data-shared-section", Symbol: u.qualified(t),
		Reason: fmt.Sprintf("new variable in %s together with the file's existing data (%s objects are compiled without -fdata-sections, which would change the target's section anchors); define it in a new source file, or in a section of its own with __attribute__((section(\".data.NAME\")))",
			t.sec.name, e.b.tgt.mach.name)})
}

// checkLayout proves that a data section reached through its section
// symbol, which is how gcc's section anchors appear in an object (one
// ADRP+ADD of the section's start, then loads at fixed offsets that no
// relocation names), lays out its variables in the target at the same
// distances as in the fixed object. Anchored offsets are then right in the
// target whichever variable the relocation is bound through.
func (e *emitter) checkLayout(u *unit, sec *section) error {
	if e.layoutDone[sec] {
		return nil
	}
	e.layoutDone[sec] = true
	var base *symbol
	var baseAddr uint64
	for _, s := range sec.syms {
		if !isData(s) {
			continue
		}
		o := u.corr[s]
		if o == nil {
			if sec.write() || sec.tls() {
				return e.refuseShared(u, s)
			}
			continue // a new constant: its users are copied with it
		}
		file := u.orig.file
		ts, err := e.b.tgt.lookup(o, file)
		if err != nil {
			return &MismatchError{Function: o.name, File: localFile(o, file), Detail: fmt.Sprintf("the patch reaches it through %s but the target does not define it: %v", sec.name, err)}
		}
		if base == nil {
			base, baseAddr = s, ts.Value
			continue
		}
		if int64(ts.Value-baseAddr) != int64(s.value-base.value) {
			return e.refuse(Refusal{Kind: "data-layout", Symbol: u.qualified(s),
				Reason: fmt.Sprintf("the fixed code reaches it at %+d bytes from %s through %s (a section anchor), the target has it at %+d", int64(s.value-base.value), base.name, sec.name, int64(ts.Value-baseAddr))})
		}
	}
	return nil
}

func (e *emitter) mapped(s *symbol) *outSym {
	if o := e.symMap[s]; o != nil {
		return o
	}
	panic("build: symbol of an included section not mapped: " + s.name)
}

func (e *emitter) refuse(r Refusal) error {
	for _, x := range e.refusals {
		if x.Kind == r.Kind && x.Symbol == r.Symbol {
			return nil
		}
	}
	e.refusals = append(e.refusals, r)
	return nil
}

// bindTarget makes a reference to the target's copy of o (a symbol of the
// original object; p is the patched one) with d added.
func (e *emitter) bindTarget(u *unit, o, p *symbol, r reloc, d int64) (*outSym, int64, error) {
	file := u.patched.file
	if u.orig != nil && o.sec != nil && o.sec.obj == u.orig {
		file = u.orig.file
	}
	ts, err := e.b.tgt.lookup(o, file)
	if err != nil {
		return nil, 0, &MismatchError{Function: o.name, File: localFile(o, file), Detail: fmt.Sprintf("the patch refers to it but the target does not define it: %v", err)}
	}
	if addr, ok := e.observed[o]; ok && addr != ts.Value {
		return nil, 0, &MismatchError{Function: o.name, File: localFile(o, file),
			Detail: fmt.Sprintf("the target's code uses it at %#x but its symbol is at %#x", addr, ts.Value)}
	}
	tls := ts.Type == elf.STT_TLS
	key := u.qualified(p)
	if e.b.tgt.uniqueByName(ts) {
		if tls != (p.typ == elf.STT_TLS || r.cls.tls) {
			return nil, 0, fmt.Errorf("%w: %s is thread-local in one build only", ErrUnsupported, key)
		}
		e.bindings[key] = ts.Name
		return e.undefined(ts.Name, tls), d, nil
	}
	if tls {
		return nil, 0, e.refuse(Refusal{Kind: "ambiguous-tls", Symbol: key, Reason: "thread-local static whose name is not unique in the target; the engine cannot bind it"})
	}
	if r.cls.got {
		return nil, 0, fmt.Errorf("%w: %s is reached through the GOT but its name is not unique in the target", ErrUnsupported, key)
	}
	// The name is not unique in the target: refer to it as an offset from
	// a global symbol the engine does find by name. The patch is bound to
	// this exact build, so the distance is fixed.
	a, err := e.b.tgt.anchorFor(e.names)
	if err != nil {
		return nil, 0, err
	}
	e.bindings[key] = fmt.Sprintf("%s%+#x (%s@%s)", a.Name, int64(ts.Value)-int64(a.Value), ts.Name, ts.File)
	return e.undefined(a.Name, false), d + int64(ts.Value) - int64(a.Value), nil
}

// describeBinding is for reports.
func describeBinding(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+" -> "+v)
	}
	sort.Strings(out)
	return out
}
