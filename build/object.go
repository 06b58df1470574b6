package build

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// object is a compiled relocatable object, read completely.
type object struct {
	path   string
	file   string // its STT_FILE name, as the linker copies it into the target
	lang   string
	rec    CompileRecord
	secs   []*section // by ELF index; nil for sections not kept
	syms   []*symbol  // by symbol index; syms[0] is the null symbol
	byName map[string]*symbol
	raw    *elf.File
	mach   *machine
	lsda   map[*section][]lsdaRef // by code section, from .eh_frame; see lsdas
}

type section struct {
	obj     *object
	idx     int
	name    string
	typ     elf.SectionType
	flags   elf.SectionFlag
	align   uint64
	entsize uint64
	size    uint64
	data    []byte // nil for NOBITS
	relocs  []reloc
	syms    []*symbol // named symbols defined in it, by address
	secSym  *symbol
}

type symbol struct {
	idx   int
	name  string
	value uint64
	size  uint64
	typ   elf.SymType
	bind  elf.SymBind
	other uint8
	shndx elf.SectionIndex
	sec   *section
}

type reloc struct {
	off    uint64
	typ    uint32 // elf.R_X86_64 or elf.R_AARCH64, by the object's machine
	cls    relocClass
	sym    *symbol
	addend int64
}

func (s *symbol) defined() bool {
	return s.shndx != elf.SHN_UNDEF && s.shndx != elf.SHN_COMMON
}

func (s *symbol) local() bool { return s.bind == elf.STB_LOCAL }

func (s *section) exec() bool  { return s.flags&elf.SHF_EXECINSTR != 0 }
func (s *section) alloc() bool { return s.flags&elf.SHF_ALLOC != 0 }
func (s *section) write() bool { return s.flags&elf.SHF_WRITE != 0 }
func (s *section) tls() bool   { return s.flags&elf.SHF_TLS != 0 }
func (s *section) merge() bool { return s.flags&elf.SHF_MERGE != 0 }
func (s *section) strings() bool {
	return s.flags&elf.SHF_STRINGS != 0
}

// loadObject reads an ELF relocatable object compiled for machine m.
func loadObject(path string, m *machine) (obj *object, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: invalid ELF object: %v", path, r)
		}
	}()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.Type != elf.ET_REL || f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB {
		return nil, fmt.Errorf("%s: %w: want a little-endian ELF64 relocatable object, have %v %v %v", path, ErrUnsupported, f.Class, f.Data, f.Type)
	}
	if f.Machine != m.em {
		return nil, &MachineError{What: "object " + path, Have: f.Machine, Want: m.em}
	}
	o := &object{path: path, raw: f, mach: m, byName: map[string]*symbol{}}
	o.secs = make([]*section, len(f.Sections))
	for i, s := range f.Sections {
		sec := &section{obj: o, idx: i, name: s.Name, typ: s.Type, flags: s.Flags, align: s.Addralign, entsize: s.Entsize, size: s.Size}
		if s.Type != elf.SHT_NOBITS && s.Type != elf.SHT_NULL && s.Flags&elf.SHF_ALLOC != 0 {
			if sec.data, err = s.Data(); err != nil {
				return nil, fmt.Errorf("%s: section %s: %w", path, s.Name, err)
			}
		}
		o.secs[i] = sec
	}
	esyms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("%s: symbols: %w", path, err)
	}
	o.syms = make([]*symbol, len(esyms)+1)
	o.syms[0] = &symbol{}
	for i, es := range esyms {
		s := &symbol{idx: i + 1, name: es.Name, value: es.Value, size: es.Size, typ: elf.ST_TYPE(es.Info),
			bind: elf.ST_BIND(es.Info), other: es.Other, shndx: es.Section}
		if s.typ == elf.STT_FILE && o.file == "" {
			o.file = es.Name
		}
		if m.em == elf.EM_AARCH64 && mappingSymbol(es.Name) {
			// $x and $d mark code and data for disassemblers; they name
			// nothing, and no relocation refers to them.
			s.name = ""
		}
		if es.Section < elf.SHN_LORESERVE && int(es.Section) < len(o.secs) && es.Section != elf.SHN_UNDEF {
			s.sec = o.secs[es.Section]
			if s.typ == elf.STT_SECTION {
				s.sec.secSym = s
			} else if s.name != "" {
				s.sec.syms = append(s.sec.syms, s)
			}
		}
		o.syms[i+1] = s
		if s.name != "" && s.typ != elf.STT_SECTION && s.typ != elf.STT_FILE {
			if prev := o.byName[s.name]; prev == nil || (!prev.defined() && s.defined()) {
				o.byName[s.name] = s
			}
		}
	}
	for _, s := range f.Sections {
		if s.Type == elf.SHT_REL {
			return nil, fmt.Errorf("%s: %w: SHT_REL relocations", path, ErrUnsupported)
		}
		if s.Type != elf.SHT_RELA || int(s.Info) >= len(o.secs) {
			continue
		}
		tgt := o.secs[s.Info]
		rd, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, s.Name, err)
		}
		for off := 0; off+24 <= len(rd); off += 24 {
			info := binary.LittleEndian.Uint64(rd[off+8:])
			si := int(info >> 32)
			if si >= len(o.syms) {
				return nil, fmt.Errorf("%s: %s: bad symbol index %d", path, s.Name, si)
			}
			typ := uint32(info)
			tgt.relocs = append(tgt.relocs, reloc{off: binary.LittleEndian.Uint64(rd[off:]), typ: typ, cls: m.classify(typ),
				sym: o.syms[si], addend: int64(binary.LittleEndian.Uint64(rd[off+16:]))})
		}
	}
	for _, s := range o.secs {
		sortRelocs(s.relocs)
		sortSyms(s.syms)
	}
	return o, nil
}

// mappingSymbol reports the AArch64 ELF mapping symbols: $x, $d and
// their numbered forms ($x.12).
func mappingSymbol(name string) bool {
	if len(name) < 2 || name[0] != '$' || (name[1] != 'x' && name[1] != 'd') {
		return false
	}
	return len(name) == 2 || name[2] == '.'
}

func sortRelocs(r []reloc) {
	for i := 1; i < len(r); i++ {
		for j := i; j > 0 && r[j].off < r[j-1].off; j-- {
			r[j], r[j-1] = r[j-1], r[j]
		}
	}
}

func sortSyms(s []*symbol) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].value < s[j-1].value; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// pointsAt is the offset, relative to the symbol, that a relocation refers
// to: the addend, corrected on x86-64 for the distance from the field to
// the end of the instruction for PC-relative ones (4 bytes, the common case).
func (r reloc) pointsAt() int64 { return r.addend + r.cls.pcAdjust }

// target resolves a relocation against a section symbol to the named
// symbol it points into, and returns it with the addend rebased on it.
func (r reloc) target() (*symbol, int64) {
	s := r.sym
	if s.typ != elf.STT_SECTION && !isAnchor(s) || s.sec == nil {
		return s, r.addend
	}
	at := r.pointsAt()
	if s.typ != elf.STT_SECTION {
		at += int64(s.value) // an anchor inside the section
	}
	var best *symbol
	for _, c := range s.sec.syms {
		if c.typ == elf.STT_NOTYPE && strings.HasPrefix(c.name, ".L") {
			continue
		}
		if int64(c.value) <= at && (at < int64(c.value+c.size) || (c.size == 0 && int64(c.value) == at)) {
			if best == nil || (best.local() && !c.local()) {
				best = c
			}
		}
	}
	if best == nil && r.cls.pcAdjust != 0 {
		// An immediate of up to 4 bytes may follow the field
		// (movl $7, x(%rip) has addend -8): x starts just after at.
		for _, c := range s.sec.syms {
			if c.typ == elf.STT_NOTYPE && strings.HasPrefix(c.name, ".L") {
				continue
			}
			if v := int64(c.value); v > at && v <= at+4 && (best == nil || c.value < best.value) {
				best = c
			}
		}
	}
	if best == nil {
		// Past the end (x+size) or a section without named symbols.
		if len(s.sec.syms) == 1 && s.sec.syms[0].value == 0 && !strings.HasPrefix(s.sec.syms[0].name, ".L") {
			best = s.sec.syms[0]
		} else {
			return s, r.addend
		}
	}
	return best, at - r.cls.pcAdjust - int64(best.value)
}

// isAnchor reports a section anchor gcc emits as a symbol (.LANCHOR0):
// the assembler turns references to other local labels into references to
// their section, but keeps those of thread-local anchors.
func isAnchor(s *symbol) bool {
	return s.local() && s.typ != elf.STT_SECTION && strings.HasPrefix(s.name, ".LANCHOR")
}

// cloneSuffix matches the suffixes gcc gives to copies and parts of a
// function: foo.isra.0, foo.constprop.3, foo.part.1, foo.cold, foo.cold.2.
var cloneSuffix = regexp.MustCompile(`\.(isra|constprop|part|cold|lto_priv|localalias)(\.\d+)?`)

// isCold reports a function's cold part, which is not an entry point.
func isCold(name string) bool { return coldRE.MatchString(name) }

var coldRE = regexp.MustCompile(`\.cold(\.\d+)?$`)

// staticLocalRE matches gcc's names for function-scope statics: name.N.
var staticLocalRE = regexp.MustCompile(`^(.+)\.(\d+)$`)

// generatedConst reports compiler-made read-only objects, which are
// copied into the patch rather than bound to the target.
func generatedConst(s *symbol) bool {
	n := s.name
	for _, p := range []string{"__PRETTY_FUNCTION__", "__func__", "__FUNCTION__", "CSWTCH.", "C.", ".L"} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}
