package build

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// The patch object is written directly rather than cut out of the
// compiler's objects with objcopy and ld -r: the builder must turn
// definitions into undefined references, rename replaced functions and
// merge sections of several objects whose local names collide, which
// binutils can only do in several passes with fragile name-based rules.

type outObject struct {
	machine elf.Machine
	secs    []*outSection
	syms    []*outSym // defined and undefined, without the null symbol
}

type outSection struct {
	name    string
	typ     elf.SectionType
	flags   elf.SectionFlag
	align   uint64
	entsize uint64
	size    uint64
	data    []byte
	relocs  []outReloc
	secSym  *outSym
	index   int
}

type outSym struct {
	name  string
	value uint64
	size  uint64
	typ   elf.SymType
	bind  elf.SymBind
	other uint8
	sec   *outSection // nil: undefined
	index int
}

type outReloc struct {
	off    uint64
	typ    uint32 // as in the objects the patch is made of
	sym    *outSym
	addend int64
}

func (o *outObject) addSection(s *outSection) {
	o.secs = append(o.secs, s)
	s.secSym = &outSym{typ: elf.STT_SECTION, bind: elf.STB_LOCAL, sec: s}
	o.syms = append(o.syms, s.secSym)
}

// bytes encodes the object as ELF64 little-endian ET_REL for its machine.
func (o *outObject) bytes() []byte {
	le := binary.LittleEndian
	var shstr, str bytes.Buffer
	shstr.WriteByte(0)
	str.WriteByte(0)
	addStr := func(b *bytes.Buffer, s string) uint32 {
		if s == "" {
			return 0
		}
		off := uint32(b.Len())
		b.WriteString(s)
		b.WriteByte(0)
		return off
	}
	// Section indices: 0 null, then content sections, then their RELA
	// sections, then .symtab, .strtab, .shstrtab.
	idx := 1
	for _, s := range o.secs {
		s.index = idx
		idx++
	}
	var relaOf []*outSection
	for _, s := range o.secs {
		if len(s.relocs) > 0 {
			relaOf = append(relaOf, s)
		}
	}
	relaStart := idx
	idx += len(relaOf)
	symtabIdx, strtabIdx, shstrIdx := idx, idx+1, idx+2
	nsec := idx + 3

	// Symbols: locals first.
	var locals, globals []*outSym
	for _, s := range o.syms {
		if s.bind == elf.STB_LOCAL {
			locals = append(locals, s)
		} else {
			globals = append(globals, s)
		}
	}
	ordered := append(locals, globals...)
	symtab := make([]byte, 24*(len(ordered)+1))
	for i, s := range ordered {
		s.index = i + 1
		e := symtab[24*(i+1):]
		name := uint32(0)
		if s.typ != elf.STT_SECTION {
			name = addStr(&str, s.name)
		}
		le.PutUint32(e[0:], name)
		e[4] = byte(s.bind)<<4 | byte(s.typ)&0xf
		e[5] = s.other
		shndx := uint16(elf.SHN_UNDEF)
		if s.sec != nil {
			shndx = uint16(s.sec.index)
		}
		le.PutUint16(e[6:], shndx)
		le.PutUint64(e[8:], s.value)
		le.PutUint64(e[16:], s.size)
	}

	var body bytes.Buffer
	body.Write(make([]byte, 64))
	type hdr struct {
		name           uint32
		typ            elf.SectionType
		flags          elf.SectionFlag
		off, size      uint64
		link, info     uint32
		align, entsize uint64
	}
	hdrs := make([]hdr, nsec)
	place := func(data []byte, align uint64) uint64 {
		for align > 1 && uint64(body.Len())%align != 0 {
			body.WriteByte(0)
		}
		off := uint64(body.Len())
		body.Write(data)
		return off
	}
	for _, s := range o.secs {
		h := hdr{name: addStr(&shstr, s.name), typ: s.typ, flags: s.flags, size: s.size, align: s.align, entsize: s.entsize}
		if s.typ == elf.SHT_NOBITS {
			h.off = uint64(body.Len())
		} else {
			h.off = place(s.data, s.align)
		}
		hdrs[s.index] = h
	}
	for i, s := range relaOf {
		data := make([]byte, 24*len(s.relocs))
		for k, r := range s.relocs {
			e := data[24*k:]
			le.PutUint64(e[0:], r.off)
			le.PutUint64(e[8:], uint64(r.sym.index)<<32|uint64(r.typ))
			le.PutUint64(e[16:], uint64(r.addend))
		}
		hdrs[relaStart+i] = hdr{name: addStr(&shstr, ".rela"+s.name), typ: elf.SHT_RELA, flags: elf.SHF_INFO_LINK,
			off: place(data, 8), size: uint64(len(data)), link: uint32(symtabIdx), info: uint32(s.index), align: 8, entsize: 24}
	}
	hdrs[symtabIdx] = hdr{name: addStr(&shstr, ".symtab"), typ: elf.SHT_SYMTAB, off: place(symtab, 8), size: uint64(len(symtab)),
		link: uint32(strtabIdx), info: uint32(len(locals) + 1), align: 8, entsize: 24}
	hdrs[strtabIdx] = hdr{name: addStr(&shstr, ".strtab"), typ: elf.SHT_STRTAB, off: place(str.Bytes(), 1), size: uint64(str.Len()), align: 1}
	shName := addStr(&shstr, ".shstrtab")
	hdrs[shstrIdx] = hdr{name: shName, typ: elf.SHT_STRTAB, off: place(shstr.Bytes(), 1), size: uint64(shstr.Len()), align: 1}

	shoff := place(nil, 8)
	for _, h := range hdrs {
		e := make([]byte, 64)
		le.PutUint32(e[0:], h.name)
		le.PutUint32(e[4:], uint32(h.typ))
		le.PutUint64(e[8:], uint64(h.flags))
		le.PutUint64(e[24:], h.off)
		le.PutUint64(e[32:], h.size)
		le.PutUint32(e[40:], h.link)
		le.PutUint32(e[44:], h.info)
		le.PutUint64(e[48:], h.align)
		le.PutUint64(e[56:], h.entsize)
		body.Write(e)
	}
	out := body.Bytes()
	copy(out[0:], []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT), byte(elf.ELFOSABI_NONE)})
	le.PutUint16(out[16:], uint16(elf.ET_REL))
	le.PutUint16(out[18:], uint16(o.machine))
	le.PutUint32(out[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(out[40:], shoff)
	le.PutUint16(out[52:], 64)
	le.PutUint16(out[58:], 64)
	le.PutUint16(out[60:], uint16(nsec))
	le.PutUint16(out[62:], uint16(shstrIdx))
	return out
}
