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
	typ    elf.R_X86_64
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

// loadObject reads an x86-64 ELF relocatable object.
func loadObject(path string) (obj *object, err error) {
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
	if f.Type != elf.ET_REL || f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("%s: %w: want an x86-64 ELF64 relocatable object, have %v %v %v", path, ErrUnsupported, f.Class, f.Type, f.Machine)
	}
	o := &object{path: path, raw: f, byName: map[string]*symbol{}}
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
			tgt.relocs = append(tgt.relocs, reloc{off: binary.LittleEndian.Uint64(rd[off:]), typ: elf.R_X86_64(uint32(info)),
				sym: o.syms[si], addend: int64(binary.LittleEndian.Uint64(rd[off+16:]))})
		}
	}
	for _, s := range o.secs {
		sortRelocs(s.relocs)
		sortSyms(s.syms)
	}
	return o, nil
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

// pcRelative reports relocation types computed relative to the place.
func pcRelative(t elf.R_X86_64) bool {
	switch t {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX,
		elf.R_X86_64_REX_GOTPCRELX, elf.R_X86_64_PC64, elf.R_X86_64_GOTPC32, elf.R_X86_64_TLSGD,
		elf.R_X86_64_TLSLD, elf.R_X86_64_GOTTPOFF:
		return true
	}
	return false
}

// gotRelative reports relocation types that go through a GOT slot, which
// holds the symbol's address without the addend.
func gotRelative(t elf.R_X86_64) bool {
	switch t {
	case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX, elf.R_X86_64_GOT32, elf.R_X86_64_GOT64,
		elf.R_X86_64_GOTPCREL64:
		return true
	}
	return false
}

// relocSize is the width of the field a relocation writes.
func relocSize(t elf.R_X86_64) int {
	switch t {
	case elf.R_X86_64_64, elf.R_X86_64_PC64, elf.R_X86_64_GOTOFF64, elf.R_X86_64_GOTPC64, elf.R_X86_64_DTPOFF64,
		elf.R_X86_64_TPOFF64, elf.R_X86_64_SIZE64, elf.R_X86_64_GOT64, elf.R_X86_64_GOTPCREL64:
		return 8
	case elf.R_X86_64_NONE:
		return 0
	}
	return 4
}

// pointsAt is the offset, relative to the symbol, that a relocation refers
// to: the addend, corrected for the distance from the field to the end of
// the instruction for PC-relative ones (4 bytes, the common case).
func (r reloc) pointsAt() int64 {
	if pcRelative(r.typ) {
		return r.addend + 4
	}
	return r.addend
}

// target resolves a relocation against a section symbol to the named
// symbol it points into, and returns it with the addend rebased on it.
func (r reloc) target() (*symbol, int64) {
	s := r.sym
	if s.typ != elf.STT_SECTION || s.sec == nil {
		return s, r.addend
	}
	at := r.pointsAt()
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
	if best == nil && pcRelative(r.typ) {
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
	return best, r.addend - int64(best.value)
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
