package build

import (
	"bytes"
	"debug/elf"
	"fmt"
	"sort"
	"strings"
)

// unit is one source file compiled in both builds: orig is nil for a file
// the fix adds.
type unit struct {
	source  string // relative to the tree
	orig    *object
	patched *object
	// real is the original build's own object, compiled as the target
	// was, where the analysis object (orig) is compiled differently; nil
	// when orig is that object.
	real *object

	corr   map[*symbol]*symbol // patched symbol -> original symbol
	owners map[*symbol]map[string]bool

	eqMemo   map[[2]*section]bool
	dataMemo map[*symbol]bool // patched data symbol -> differs from the original

	changed  []*symbol // changed functions of the original that stay entry points
	added    []*symbol // new functions
	lineOnly []*symbol // changed only in line numbers
	refusals []Refusal
}

func newUnit(source string, orig, patched *object) *unit {
	u := &unit{source: source, orig: orig, patched: patched, corr: map[*symbol]*symbol{},
		eqMemo: map[[2]*section]bool{}, dataMemo: map[*symbol]bool{}}
	u.correlate()
	return u
}

// primary returns the entry symbol of a function section: a global name
// before a local alias.
func primary(sec *section) *symbol {
	var best *symbol
	for _, s := range sec.syms {
		if s.typ != elf.STT_FUNC && s.typ != elf.STT_GNU_IFUNC {
			continue
		}
		if best == nil || (best.local() && !s.local()) || (s.value == 0 && best.value != 0) {
			best = s
		}
	}
	return best
}

// qualified names a symbol of the unit for messages.
func (u *unit) qualified(s *symbol) string {
	if s.local() && u.patched.file != "" {
		return s.name + "@" + u.patched.file
	}
	return s.name
}

func isData(s *symbol) bool {
	if isAnchor(s) {
		return false
	}
	if s.typ == elf.STT_OBJECT || s.typ == elf.STT_TLS || s.typ == elf.STT_COMMON {
		return true
	}
	return s.typ == elf.STT_NOTYPE && s.sec != nil && !s.sec.exec() && !strings.HasPrefix(s.name, ".L")
}

func isFunc(s *symbol) bool { return s.typ == elf.STT_FUNC || s.typ == elf.STT_GNU_IFUNC }

// functionOwners maps each data symbol to the functions that refer to it.
func functionOwners(o *object) map[*symbol]map[string]bool {
	out := map[*symbol]map[string]bool{}
	for _, sec := range o.secs {
		if !sec.exec() || !sec.alloc() {
			continue
		}
		p := primary(sec)
		if p == nil {
			continue
		}
		// A part or clone (foo.part.0, foo.isra.0) uses foo's statics.
		owner := cloneSuffix.ReplaceAllString(p.name, "")
		for _, r := range sec.relocs {
			t, _ := r.target()
			if isData(t) {
				if out[t] == nil {
					out[t] = map[string]bool{}
				}
				out[t][owner] = true
			}
		}
	}
	return out
}

// correlate pairs each named symbol of the patched object with the same
// symbol of the original. Function-scope statics, whose numeric suffix
// gcc may number differently in the two builds, pair by name and by the
// function that uses them; copies of functions pair by base name.
func (u *unit) correlate() {
	if u.orig == nil {
		return
	}
	pOwners, oOwners := functionOwners(u.patched), functionOwners(u.orig)
	u.owners = pOwners
	taken := map[*symbol]bool{}
	byBase := func(o *object, pred func(*symbol) bool, key func(*symbol) string) map[string][]*symbol {
		m := map[string][]*symbol{}
		for _, s := range o.syms {
			if s.defined() && s.name != "" && s.typ != elf.STT_SECTION && s.typ != elf.STT_FILE && pred(s) {
				m[key(s)] = append(m[key(s)], s)
			}
		}
		return m
	}
	staticBase := func(s *symbol) string {
		if m := staticLocalRE.FindStringSubmatch(s.name); m != nil {
			return m[1]
		}
		return s.name
	}
	isStatic := func(s *symbol) bool {
		return s.local() && isData(s) && staticLocalRE.MatchString(s.name) && !generatedConst(s)
	}
	oStatics := byBase(u.orig, isStatic, staticBase)
	pStatics := byBase(u.patched, isStatic, staticBase)
	for base, ps := range pStatics {
		cands := oStatics[base]
		for _, p := range ps {
			var match []*symbol
			for _, o := range cands {
				if taken[o] {
					continue
				}
				for f := range pOwners[p] {
					if oOwners[o][f] {
						match = append(match, o)
						break
					}
				}
			}
			if len(match) == 0 && len(ps) == 1 && len(cands) == 1 && !taken[cands[0]] {
				match = cands // the only one of its name on both sides
			}
			if len(match) > 1 {
				for _, o := range match {
					if o.name == p.name {
						match = []*symbol{o}
						break
					}
				}
			}
			if len(match) == 1 {
				u.corr[p] = match[0]
				taken[match[0]] = true
			}
		}
	}
	cloneBase := func(s *symbol) string { return cloneSuffix.ReplaceAllString(s.name, ".$1") }
	oClones := byBase(u.orig, func(s *symbol) bool { return isFunc(s) && cloneSuffix.MatchString(s.name) }, cloneBase)
	pClones := byBase(u.patched, func(s *symbol) bool { return isFunc(s) && cloneSuffix.MatchString(s.name) }, cloneBase)
	for _, p := range u.patched.syms {
		if !p.defined() || p.name == "" || p.typ == elf.STT_SECTION || p.typ == elf.STT_FILE {
			continue
		}
		if _, done := u.corr[p]; done || isStatic(p) {
			continue
		}
		o := u.orig.byName[p.name]
		if o != nil && o.defined() && !taken[o] && isFunc(o) == isFunc(p) && o.local() == p.local() {
			u.corr[p] = o
			taken[o] = true
			continue
		}
		if isFunc(p) && cloneSuffix.MatchString(p.name) {
			b := cloneBase(p)
			if len(pClones[b]) == 1 && len(oClones[b]) == 1 && !taken[oClones[b][0]] {
				u.corr[p] = oClones[b][0]
				taken[oClones[b][0]] = true
			}
		}
	}
}

// cstring returns the NUL-terminated string at off.
func cstring(sec *section, off uint64) []byte {
	if sec.data == nil || off > uint64(len(sec.data)) {
		return nil
	}
	d := sec.data[off:]
	if i := bytes.IndexByte(d, 0); i >= 0 {
		return d[:i+1]
	}
	return d
}

func (s *section) bytesAt(off, n uint64) []byte {
	if s.data == nil {
		return make([]byte, n) // NOBITS: zeros
	}
	if off > uint64(len(s.data)) {
		return nil
	}
	return s.data[off:min(off+n, uint64(len(s.data)))]
}

// sectionEqual compares two sections of the unit: bytes and relocations,
// each relocation by what it refers to.
func (u *unit) sectionEqual(p, o *section) bool {
	key := [2]*section{p, o}
	if v, ok := u.eqMemo[key]; ok {
		return v
	}
	u.eqMemo[key] = true // assume equal while comparing (cycles)
	eq := p.size == o.size && p.typ == o.typ && bytes.Equal(p.data, o.data) && len(p.relocs) == len(o.relocs)
	for i := 0; eq && i < len(p.relocs); i++ {
		eq = u.relocEqual(p.relocs[i], o.relocs[i], p, o)
	}
	u.eqMemo[key] = eq
	return eq
}

// rangeEqual compares [off, off+n) of two sections with their relocations.
func (u *unit) rangeEqual(p *section, poff uint64, o *section, ooff uint64, n uint64) bool {
	if !bytes.Equal(p.bytesAt(poff, n), o.bytesAt(ooff, n)) {
		return false
	}
	in := func(s *section, off uint64) []reloc {
		var out []reloc
		for _, r := range s.relocs {
			if r.off >= off && r.off < off+n {
				out = append(out, r)
			}
		}
		return out
	}
	pr, or := in(p, poff), in(o, ooff)
	if len(pr) != len(or) {
		return false
	}
	for i := range pr {
		a, b := pr[i], or[i]
		if a.off-poff != b.off-ooff {
			return false
		}
		a.off, b.off = 0, 0
		if !u.relocEqual(a, b, p, o) {
			return false
		}
	}
	return true
}

// relocEqual compares two relocations at the same place of two sections
// by what they refer to.
func (u *unit) relocEqual(pr, or reloc, psec, osec *section) bool {
	if pr.off != or.off || pr.typ != or.typ {
		return false
	}
	pt, pa := pr.target()
	ot, oa := or.target()
	if pt.sec == psec || ot.sec == osec { // inside the section itself
		return pt.sec == psec && ot.sec == osec && pr.addend == or.addend && pt.typ == ot.typ
	}
	if pa != oa {
		return false
	}
	switch {
	case !pt.defined() || !ot.defined():
		return !pt.defined() && !ot.defined() && pt.name == ot.name
	case pt.typ == elf.STT_SECTION || ot.typ == elf.STT_SECTION:
		return pt.typ == ot.typ && u.sectionEqual(pt.sec, ot.sec)
	case pt.sec.merge() || ot.sec.merge():
		if !pt.sec.merge() || !ot.sec.merge() || pt.sec.strings() != ot.sec.strings() {
			return false
		}
		if pt.sec.strings() {
			return bytes.Equal(cstring(pt.sec, pt.value), cstring(ot.sec, ot.value))
		}
		n := max(pt.sec.entsize, 1)
		return bytes.Equal(pt.sec.bytesAt(pt.value, n), ot.sec.bytesAt(ot.value, n))
	case generatedConst(pt) && generatedConst(ot):
		return pt.size == ot.size && u.rangeEqual(pt.sec, pt.value, ot.sec, ot.value, pt.size)
	case isFunc(pt):
		if u.corr[pt] != ot {
			return false
		}
		if isCold(pt.name) {
			return u.sectionEqual(pt.sec, ot.sec)
		}
		return true
	default:
		if u.corr[pt] != ot {
			return false
		}
		if isData(pt) && !pt.sec.write() && u.dataDiffers(pt) {
			return false // a changed constant changes its users
		}
		return true
	}
}

// dataDiffers reports whether a correlated data symbol's size or initial
// contents changed.
func (u *unit) dataDiffers(p *symbol) bool {
	if v, ok := u.dataMemo[p]; ok {
		return v
	}
	o := u.corr[p]
	if o == nil {
		return false
	}
	u.dataMemo[p] = false
	d := p.size != o.size || (p.sec.typ == elf.SHT_NOBITS) != (o.sec.typ == elf.SHT_NOBITS) && !allZero(p, o) ||
		!u.rangeEqual(p.sec, p.value, o.sec, o.value, p.size)
	u.dataMemo[p] = d
	return d
}

func allZero(syms ...*symbol) bool {
	for _, s := range syms {
		for _, b := range s.sec.bytesAt(s.value, s.size) {
			if b != 0 {
				return false
			}
		}
		for _, r := range s.sec.relocs {
			if r.off >= s.value && r.off < s.value+s.size {
				return false
			}
		}
	}
	return true
}

// compare classifies every function of the patched object and collects
// the refusals about its data.
func (u *unit) compare() {
	for _, sec := range u.patched.secs {
		if !sec.exec() || !sec.alloc() || sec.size == 0 {
			continue
		}
		p := primary(sec)
		if p == nil || isCold(p.name) {
			continue
		}
		o := u.corr[p]
		switch {
		case o == nil:
			u.added = append(u.added, p)
		case !u.sectionEqual(sec, o.sec) || p.size != o.size || !u.lsdaEqual(sec, o.sec):
			u.changed = append(u.changed, p)
		}
	}
	if u.orig == nil {
		return
	}
	for _, p := range u.patched.syms {
		o := u.corr[p]
		if o == nil || !isData(p) || p.sec == nil {
			continue
		}
		name := u.qualified(p)
		switch {
		case p.size != o.size:
			u.refusals = append(u.refusals, Refusal{Kind: "data-size", Symbol: name,
				Reason: fmt.Sprintf("size of existing data changes from %d to %d bytes; the running process keeps the old object", o.size, p.size)})
		case u.dataDiffers(p) && (p.sec.write() || p.sec.tls() || !p.local()):
			u.refusals = append(u.refusals, Refusal{Kind: "data-init", Symbol: name,
				Reason: "initial value of existing data changes; the running process already holds its own value (change it from code instead)"})
		}
	}
	u.checkConstructors()
}

// checkConstructors refuses changed, added or removed constructors and
// destructors: they ran when the process started, or will not run at all.
func (u *unit) checkConstructors() {
	isInit := func(s *section) bool {
		for _, p := range []string{".init_array", ".fini_array", ".ctors", ".dtors", ".preinit_array"} {
			if s.name == p || strings.HasPrefix(s.name, p+".") {
				return true
			}
		}
		return s.typ == elf.SHT_INIT_ARRAY || s.typ == elf.SHT_FINI_ARRAY || s.typ == elf.SHT_PREINIT_ARRAY
	}
	list := func(o *object, mapName func(*symbol) string) []string {
		var out []string
		for _, s := range o.secs {
			if !isInit(s) {
				continue
			}
			for _, r := range s.relocs {
				t, _ := r.target()
				out = append(out, s.name+":"+mapName(t))
			}
		}
		sort.Strings(out)
		return out
	}
	pl := list(u.patched, func(s *symbol) string {
		if o := u.corr[s]; o != nil {
			return o.name
		}
		return "new:" + s.name
	})
	ol := list(u.orig, func(s *symbol) string { return s.name })
	if strings.Join(pl, ",") != strings.Join(ol, ",") {
		u.refusals = append(u.refusals, Refusal{Kind: "constructor", Symbol: u.patched.file,
			Reason: "the set of constructors or destructors changes; they already ran (or will never run) in the live process"})
	}
	changed := map[*symbol]bool{}
	for _, c := range u.changed {
		changed[c] = true
	}
	for _, s := range u.patched.secs {
		if !isInit(s) {
			continue
		}
		for _, r := range s.relocs {
			t, _ := r.target()
			if changed[t] {
				u.refusals = append(u.refusals, Refusal{Kind: "constructor", Symbol: u.qualified(t),
					Reason: "constructor or destructor changes; constructors already ran in the live process"})
			}
		}
	}
}

// staticLocalsOf lists the function-scope statics (writable local data)
// a function section refers to.
func staticLocalsOf(sec *section) []*symbol {
	var out []*symbol
	seen := map[*symbol]bool{}
	for _, r := range sec.relocs {
		t, _ := r.target()
		if isData(t) && t.local() && t.sec != nil && (t.sec.write() || t.sec.tls()) && !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

// checkStaticLocals refuses a changed function that no longer uses a
// static variable its old version used, unless another function of the
// fixed file (a part or clone gcc split off, a function it is inlined
// into) still does: otherwise the state it held is dropped.
func (u *unit) checkStaticLocals() {
	used := map[*symbol]bool{}
	for _, sec := range u.patched.secs {
		if !sec.exec() || !sec.alloc() {
			continue
		}
		for _, s := range staticLocalsOf(sec) {
			if c := u.corr[s]; c != nil {
				used[c] = true
			}
		}
	}
	reported := map[*symbol]bool{}
	for _, p := range u.changed {
		o := u.corr[p]
		for _, s := range staticLocalsOf(o.sec) {
			// gcc names a C function's statics NAME.N, C++ mangles them _ZZ...
			if !used[s] && !reported[s] && (staticLocalRE.MatchString(s.name) || strings.HasPrefix(s.name, "_ZZ")) {
				reported[s] = true
				u.refusals = append(u.refusals, Refusal{Kind: "static-local-removed", Symbol: u.qualified(s), Warning: true,
					Reason: fmt.Sprintf("%s no longer uses this static variable; the state the running process keeps in it is abandoned", p.name)})
			}
		}
	}
}
