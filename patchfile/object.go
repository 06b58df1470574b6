package patchfile

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"math/bits"
	"strings"
)

// ELF64 structure sizes.
const (
	ehdrSize = 64
	shdrSize = 64
	phdrSize = 56
	symSize  = 24
	relaSize = 24
)

var le = binary.LittleEndian

// object is a validated ELF64 relocatable object, with or without the
// patch image sections.
type object struct {
	raw      []byte
	machine  elf.Machine
	shoff    uint64
	shnum    int  // real section count, extended numbering resolved
	extended bool // e_shnum is 0 and the count lives in section 0
	shstrndx int

	headers []elf.SectionHeader
	names   []string

	symtab   int
	sections []Section
	symbols  []Symbol

	meta, sig int // section indices, -1 when absent
	hotpatch  []string
}

// withELF runs fn and turns a panic inside debug/elf into an error:
// debug/elf is not hardened against hostile input.
func withELF(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = formatErr(-1, "invalid ELF structure (parser failed: %v)", r)
		}
	}()
	return fn()
}

func shdrOff(o *object, i int) int64 { return int64(o.shoff) + int64(i)*shdrSize }

// inFile reports whether [off, off+size) lies within a file of length n.
func inFile(off, size uint64, n int) bool {
	end, carry := bits.Add64(off, size, 0)
	return carry == 0 && end <= uint64(n)
}

func parseObject(raw []byte) (*object, error) {
	o := &object{raw: raw, meta: -1, sig: -1, symtab: -1}
	if err := o.parseHeader(); err != nil {
		return nil, err
	}
	var f *elf.File
	err := withELF(func() error {
		var err error
		f, err = elf.NewFile(bytes.NewReader(raw))
		return err
	})
	if err != nil {
		if _, ok := err.(*FormatError); ok {
			return nil, err
		}
		return nil, formatErr(-1, "invalid ELF: %v", err)
	}
	if len(f.Sections) != o.shnum {
		return nil, formatErr(0, "section count mismatch: header says %d, parsed %d", o.shnum, len(f.Sections))
	}
	for _, s := range f.Sections {
		o.headers = append(o.headers, s.SectionHeader)
		o.names = append(o.names, s.Name)
	}
	if err := o.checkSections(); err != nil {
		return nil, err
	}
	if err := o.loadSymbols(f); err != nil {
		return nil, err
	}
	o.loadSections()
	if err := o.loadRelocs(); err != nil {
		return nil, err
	}
	return o, nil
}

// parseHeader checks the ELF header by hand, before debug/elf sees the
// file, so that the common rejections get precise messages.
func (o *object) parseHeader() error {
	raw := o.raw
	if len(raw) < ehdrSize {
		return formatErr(0, "file is %d bytes, too short for an ELF header", len(raw))
	}
	if string(raw[:4]) != elf.ELFMAG {
		return formatErr(0, "not an ELF file (bad magic)")
	}
	switch elf.Class(raw[elf.EI_CLASS]) {
	case elf.ELFCLASS64:
	case elf.ELFCLASS32:
		return fmt.Errorf("%w: 32-bit ELF; patches must be ELF64 objects for x86-64 or aarch64", ErrUnsupportedObject)
	default:
		return formatErr(int64(elf.EI_CLASS), "unknown ELF class %d", raw[elf.EI_CLASS])
	}
	switch elf.Data(raw[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
	case elf.ELFDATA2MSB:
		return fmt.Errorf("%w: big-endian ELF; patches must be little-endian", ErrUnsupportedObject)
	default:
		return formatErr(int64(elf.EI_DATA), "unknown ELF data encoding %d", raw[elf.EI_DATA])
	}
	if raw[elf.EI_VERSION] != byte(elf.EV_CURRENT) || le.Uint32(raw[20:]) != uint32(elf.EV_CURRENT) {
		return formatErr(int64(elf.EI_VERSION), "unknown ELF version")
	}
	if t := elf.Type(le.Uint16(raw[16:])); t != elf.ET_REL {
		return fmt.Errorf("%w: ELF type %v; a patch must be a relocatable object (rebuild it with gcc -c -fPIC)", ErrUnsupportedObject, t)
	}
	o.machine = elf.Machine(le.Uint16(raw[18:]))
	if archOf(o.machine) == "" {
		return fmt.Errorf("%w: machine %v; only x86-64 and aarch64 objects are supported", ErrUnsupportedObject, o.machine)
	}

	phoff := le.Uint64(raw[32:])
	phentsize := le.Uint16(raw[54:])
	phnum := uint64(le.Uint16(raw[56:]))
	if phnum > 0 && (phentsize != phdrSize || !inFile(phoff, phnum*phdrSize, len(raw))) {
		return formatErr(32, "program header table out of range or with bad entry size")
	}

	o.shoff = le.Uint64(raw[40:])
	shentsize := le.Uint16(raw[58:])
	shnum := int(le.Uint16(raw[60:]))
	shstrndx := int(le.Uint16(raw[62:]))
	if o.shoff == 0 {
		return formatErr(40, "object has no section header table")
	}
	if shentsize != shdrSize {
		return formatErr(58, "section header entry size is %d, want %d", shentsize, shdrSize)
	}
	if !inFile(o.shoff, shdrSize, len(raw)) {
		return formatErr(40, "section header table offset %#x is beyond the end of the file", o.shoff)
	}
	sh0 := raw[o.shoff : o.shoff+shdrSize]
	if elf.SectionType(le.Uint32(sh0[4:])) != elf.SHT_NULL {
		return formatErr(int64(o.shoff), "section 0 is not SHT_NULL")
	}
	if shnum == 0 {
		// Extended numbering: the count is in section 0's sh_size.
		n := le.Uint64(sh0[32:])
		if n < uint64(elf.SHN_LORESERVE) || n > uint64(len(raw))/shdrSize {
			return formatErr(int64(o.shoff), "invalid extended section count %d", n)
		}
		shnum = int(n)
		o.extended = true
	}
	if shstrndx == int(elf.SHN_XINDEX) {
		if !o.extended {
			return formatErr(62, "SHN_XINDEX string table index without extended section numbering")
		}
		shstrndx = int(le.Uint32(sh0[40:]))
		if shstrndx < int(elf.SHN_LORESERVE) {
			return formatErr(int64(o.shoff), "invalid extended string table index %d", shstrndx)
		}
	}
	if !inFile(o.shoff, uint64(shnum)*shdrSize, len(raw)) {
		return formatErr(40, "section header table (%d entries at %#x) extends beyond the end of the file", shnum, o.shoff)
	}
	if shstrndx == 0 || shstrndx >= shnum {
		return formatErr(62, "invalid section name table index %d", shstrndx)
	}
	o.shnum = shnum
	o.shstrndx = shstrndx
	return nil
}

// checkSections validates every section header and finds the sections
// the format gives meaning to.
func (o *object) checkSections() error {
	for i, h := range o.headers {
		if i == 0 {
			continue
		}
		name := o.names[i]
		off := shdrOff(o, i)
		if h.Type != elf.SHT_NOBITS && h.Type != elf.SHT_NULL && !inFile(h.Offset, h.FileSize, len(o.raw)) {
			return formatErr(off, "section %d (%s) data [%#x, +%#x) extends beyond the end of the file", i, name, h.Offset, h.FileSize)
		}
		if h.Link >= uint32(o.shnum) {
			return formatErr(off, "section %d (%s) links to section %d, which does not exist", i, name, h.Link)
		}
		alloc := h.Flags&elf.SHF_ALLOC != 0
		switch h.Type {
		case elf.SHT_REL:
			return fmt.Errorf("%w: section %s uses SHT_REL relocations; x86-64 and aarch64 objects must use SHT_RELA (rebuild the object with gcc -c)", ErrUnsupportedObject, name)
		case elf.SHT_SYMTAB_SHNDX:
			return fmt.Errorf("%w: section %s: extended symbol section indices are not supported; split the patch into smaller objects", ErrUnsupportedObject, name)
		case elf.SHT_SYMTAB:
			if o.symtab >= 0 {
				return formatErr(off, "more than one symbol table (sections %d and %d)", o.symtab, i)
			}
			o.symtab = i
		}
		if alloc {
			switch h.Type {
			case elf.SHT_NULL:
				return formatErr(off, "inactive (SHT_NULL) section %d is marked allocatable", i)
			case elf.SHT_SYMTAB, elf.SHT_DYNSYM, elf.SHT_RELA, elf.SHT_DYNAMIC, elf.SHT_GROUP, elf.SHT_STRTAB:
				return formatErr(off, "unexpected allocatable %v section %s in a relocatable object", h.Type, name)
			}
			if h.Flags&elf.SHF_COMPRESSED != 0 {
				return formatErr(off, "allocatable section %s is compressed", name)
			}
			if h.Addralign > 1 && h.Addralign&(h.Addralign-1) != 0 {
				return formatErr(off, "section %s alignment %d is not a power of two", name, h.Addralign)
			}
		}
		if strings.HasPrefix(name, ".hotpatch.") {
			o.hotpatch = append(o.hotpatch, name)
			switch name {
			case MetaSectionName:
				if o.meta >= 0 {
					return formatErr(off, "more than one %s section", name)
				}
				o.meta = i
			case SignatureSectionName:
				if o.sig >= 0 {
					return formatErr(off, "more than one %s section", name)
				}
				o.sig = i
			}
		}
	}
	if sh := o.headers[o.shstrndx]; sh.Flags&elf.SHF_COMPRESSED != 0 {
		return formatErr(shdrOff(o, o.shstrndx), "section name table is compressed")
	}
	if o.symtab < 0 {
		return formatErr(-1, "object has no symbol table (.symtab); do not strip patch objects")
	}
	return nil
}

func (o *object) loadSymbols(f *elf.File) error {
	h := o.headers[o.symtab]
	off := shdrOff(o, o.symtab)
	if h.Flags&elf.SHF_COMPRESSED != 0 {
		return formatErr(off, "symbol table is compressed")
	}
	if h.Entsize != symSize || h.FileSize%symSize != 0 || h.FileSize < symSize {
		return formatErr(off, "symbol table has bad size %d or entry size %d", h.FileSize, h.Entsize)
	}
	if h.Link == 0 || o.headers[h.Link].Type != elf.SHT_STRTAB || o.headers[h.Link].Flags&elf.SHF_COMPRESSED != 0 {
		return formatErr(off, "symbol table does not link to an uncompressed string table")
	}
	nsyms := int(h.FileSize / symSize)
	if h.Info > uint32(nsyms) {
		return formatErr(off, "symbol table first-global index %d exceeds its %d entries", h.Info, nsyms)
	}
	sh := o.headers[h.Link]
	strtab := o.raw[sh.Offset : sh.Offset+sh.FileSize]
	data := o.raw[h.Offset : h.Offset+h.FileSize]

	var syms []elf.Symbol
	err := withELF(func() error {
		var err error
		syms, err = f.Symbols()
		return err
	})
	if err != nil {
		if _, ok := err.(*FormatError); ok {
			return err
		}
		return formatErr(off, "cannot read symbol table: %v", err)
	}
	// debug/elf drops the null symbol; Spec keeps it so that relocation
	// symbol indices index Spec.Symbols directly.
	if len(syms) != nsyms-1 {
		return formatErr(off, "symbol count mismatch: %d entries, parsed %d", nsyms, len(syms)+1)
	}
	o.symbols = make([]Symbol, nsyms)
	for i := 1; i < nsyms; i++ {
		ent := data[i*symSize:]
		symOff := int64(h.Offset) + int64(i)*symSize
		if name := le.Uint32(ent); name != 0 && (int(name) >= len(strtab) || bytes.IndexByte(strtab[name:], 0) < 0) {
			return formatErr(symOff, "symbol %d has an invalid name offset %d", i, name)
		}
		s := syms[i-1]
		sym := Symbol{
			Name:    s.Name,
			Value:   s.Value,
			Size:    s.Size,
			Bind:    elf.ST_BIND(s.Info),
			Type:    elf.ST_TYPE(s.Info),
			Section: s.Section,
		}
		switch shndx := sym.Section; {
		case shndx == elf.SHN_UNDEF, shndx == elf.SHN_ABS, shndx == elf.SHN_COMMON:
		case shndx == elf.SHN_XINDEX:
			return fmt.Errorf("%w: symbol %d (%s) uses an extended section index", ErrUnsupportedObject, i, sym.Name)
		case int(shndx) >= o.shnum || shndx >= elf.SHN_LORESERVE:
			return formatErr(symOff, "symbol %d (%s) refers to section %d, which does not exist", i, sym.Name, shndx)
		default:
			sec := o.headers[shndx]
			if sec.Flags&elf.SHF_ALLOC != 0 {
				end, carry := bits.Add64(sym.Value, sym.Size, 0)
				if carry != 0 || end > sec.Size {
					return formatErr(symOff, "symbol %d (%s) [%#x, +%#x) lies outside section %s (size %#x)", i, sym.Name, sym.Value, sym.Size, o.names[shndx], sec.Size)
				}
			}
		}
		o.symbols[i] = sym
	}
	return nil
}

func (o *object) loadSections() {
	for i, h := range o.headers {
		if i == 0 || h.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		s := Section{
			Index: i,
			Name:  o.names[i],
			Type:  h.Type,
			Flags: h.Flags,
			Align: h.Addralign,
			Size:  h.Size,
		}
		if h.Type != elf.SHT_NOBITS {
			s.Data = bytes.Clone(o.raw[h.Offset : h.Offset+h.FileSize])
			if s.Data == nil {
				s.Data = []byte{}
			}
		}
		o.sections = append(o.sections, s)
	}
}

func (o *object) loadRelocs() error {
	seen := make(map[int]string)
	byIndex := make(map[int]*Section, len(o.sections))
	for i := range o.sections {
		byIndex[o.sections[i].Index] = &o.sections[i]
	}
	for i, h := range o.headers {
		if h.Type != elf.SHT_RELA {
			continue
		}
		name, off := o.names[i], shdrOff(o, i)
		if h.Info == 0 || int(h.Info) >= o.shnum {
			return formatErr(off, "relocation section %s targets section %d, which does not exist", name, h.Info)
		}
		target := int(h.Info)
		th := o.headers[target]
		if target == o.meta || target == o.sig {
			return formatErr(off, "relocation section %s targets %s", name, o.names[target])
		}
		if th.Flags&elf.SHF_ALLOC == 0 {
			// Debug info and other non-loaded data: not part of the patch.
			continue
		}
		sec := byIndex[target]
		if th.Type == elf.SHT_NOBITS {
			return formatErr(off, "relocation section %s targets %s, which has no file data", name, sec.Name)
		}
		if prev, dup := seen[target]; dup {
			return formatErr(off, "sections %s and %s both relocate %s", prev, name, sec.Name)
		}
		seen[target] = name
		if h.Flags&elf.SHF_COMPRESSED != 0 {
			return formatErr(off, "relocation section %s is compressed", name)
		}
		if int(h.Link) != o.symtab {
			return formatErr(off, "relocation section %s does not link to the symbol table", name)
		}
		if h.Entsize != relaSize || h.FileSize%relaSize != 0 {
			return formatErr(off, "relocation section %s has bad size %d or entry size %d", name, h.FileSize, h.Entsize)
		}
		data := o.raw[h.Offset : h.Offset+h.FileSize]
		n := len(data) / relaSize
		relocs := make([]Reloc, n)
		for j := range relocs {
			ent := data[j*relaSize:]
			info := le.Uint64(ent[8:])
			r := Reloc{
				Offset: le.Uint64(ent),
				Type:   uint32(info),
				Symbol: int(info >> 32),
				Addend: int64(le.Uint64(ent[16:])),
			}
			relOff := int64(h.Offset) + int64(j)*relaSize
			if info>>32 >= uint64(len(o.symbols)) {
				return formatErr(relOff, "relocation %d in %s: symbol index %d out of range (symbol table has %d entries)", j, name, info>>32, len(o.symbols))
			}
			if r.Offset >= sec.Size {
				return formatErr(relOff, "relocation %d in %s: offset %#x is outside %s (size %#x)", j, name, r.Offset, sec.Name, sec.Size)
			}
			relocs[j] = r
		}
		sec.Relocs = relocs
	}
	return nil
}

// archOf maps an ELF machine to the metadata arch name, or "" when the
// machine is not supported.
func archOf(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_AARCH64:
		return "arm64"
	}
	return ""
}
