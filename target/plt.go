package target

import (
	"bytes"
	"debug/elf"
	"encoding/binary"

	"golang.org/x/arch/x86/x86asm"
)

// Calls through the PLT. An IFUNC that no IRELATIVE relocation resolved
// (arm64 glibc's memcpy, memset and memmove, which libc itself never calls
// through its PLT) is bound by the dynamic linker only in the slots of the
// objects that call it. Such a slot tells where the IFUNC went once it is
// bound; before that, the object's PLT entry for it binds it on first use,
// exactly as the object's own calls do.

// slotRef is a GOT slot the dynamic linker fills with a symbol's address:
// bound at load (GLOB_DAT), or lazily on the first call (JUMP_SLOT).
type slotRef struct {
	slot uint64
	lazy bool
}

// BoundSlot returns the link-time address of this image's GOT slot for
// name at version (a slot asking for no version matches any), a GLOB_DAT
// one, bound at load, before a JUMP_SLOT one, which may be bound at load
// or on the first call; lazy tells which.
func (s *Symbols) BoundSlot(name, version string) (slot uint64, lazy, ok bool) {
	for _, pass := range []bool{false, true} {
		for _, r := range s.slots[name] {
			if r.lazy == pass && s.versionMatches(r.slot, version) {
				return r.slot, r.lazy, true
			}
		}
	}
	return 0, false, false
}

func (s *Symbols) versionMatches(slot uint64, version string) bool {
	v := s.slotVersion[slot]
	return v == "" || version == "" || v == version
}

// InPLT reports whether a link-time address lies in this image's PLT: a
// lazily bound slot still holding such an address is not bound yet.
func (s *Symbols) InPLT(addr uint64) bool {
	for _, r := range s.plt {
		if addr >= r[0] && addr < r[1] {
			return true
		}
	}
	return false
}

// PLTEntry returns the link-time address of this image's PLT entry for
// name at version: the code that jumps through its JUMP_SLOT.
func (s *Symbols) PLTEntry(name, version string) (uint64, bool) {
	for _, r := range s.slots[name] {
		if r.lazy && s.versionMatches(r.slot, version) {
			if entry, ok := s.pltBySlot[r.slot]; ok {
				return entry, true
			}
		}
	}
	return 0, false
}

// loadPLT records the PLT sections and, for each slot, its first entry.
func (s *Symbols) loadPLT(f *elf.File) {
	for _, sec := range f.Sections {
		if pltSection(f.Machine, sec.Name) {
			s.plt = append(s.plt, [2]uint64{sec.Addr, sec.Addr + sec.Size})
		}
	}
	for entry, slot := range PLTEntries(f) {
		if e, ok := s.pltBySlot[slot]; !ok || entry < e {
			s.pltBySlot[slot] = entry
		}
	}
}

func pltSection(m elf.Machine, name string) bool {
	switch m {
	case elf.EM_X86_64:
		return name == ".plt" || name == ".plt.sec" || name == ".plt.got"
	case elf.EM_AARCH64:
		return name == ".plt" || name == ".iplt"
	}
	return false
}

// PLTEntries maps each PLT entry of f to the GOT slot it jumps through,
// found by decoding the entries: their layout differs between linkers and
// with IBT/BTI, their loads do not. An entry that starts with a landing
// pad (endbr64, bti c) is listed at the pad and at the load.
func PLTEntries(f *elf.File) map[uint64]uint64 {
	out := map[uint64]uint64{}
	for _, sec := range f.Sections {
		if !pltSection(f.Machine, sec.Name) {
			continue
		}
		code, err := sec.Data()
		if err != nil {
			continue
		}
		switch f.Machine {
		case elf.EM_X86_64:
			pltAMD64(sec.Addr, code, out)
		case elf.EM_AARCH64:
			pltARM64(sec.Addr, code, out)
		}
	}
	return out
}

// pltAMD64 reads entries whose indirect jump is `jmp *slot(%rip)`,
// preceded by endbr64 when built for IBT.
func pltAMD64(addr uint64, code []byte, out map[uint64]uint64) {
	endbr64 := []byte{0xf3, 0x0f, 0x1e, 0xfa}
	for i := 0; i < len(code); {
		in, err := x86asm.Decode(code[i:], 64)
		if err != nil {
			i++
			continue
		}
		if m, ok := in.Args[0].(x86asm.Mem); in.Op == x86asm.JMP && ok && m.Base == x86asm.RIP {
			at := addr + uint64(i)
			slot := at + uint64(in.Len) + uint64(m.Disp)
			out[at] = slot
			if i >= 4 && bytes.Equal(code[i-4:i], endbr64) {
				out[at-4] = slot
			}
		}
		i += in.Len
	}
}

// pltARM64 reads entries made of `adrp x16, slot; ldr x17, [x16, #lo12]`
// (then add and br x17), preceded by `bti c` in a BTI PLT. PLT0 has the
// same pair after `stp x16, x30`.
func pltARM64(addr uint64, code []byte, out map[uint64]uint64) {
	const btiC = 0xd503245f
	le := binary.LittleEndian
	for i := 0; i+8 <= len(code); i += 4 {
		adrp, ldr := le.Uint32(code[i:]), le.Uint32(code[i+4:])
		if adrp&0x9f00001f != 0x90000010 || ldr&0xffc003ff != 0xf9400211 {
			continue
		}
		at := addr + uint64(i)
		imm := int64(adrp>>29&3|(adrp>>5&0x7ffff)<<2) << 43 >> 43 // immhi:immlo, sign-extended
		slot := uint64(int64(at&^0xfff) + imm<<12 + int64(ldr>>10&0xfff)*8)
		out[at] = slot
		if i >= 4 && le.Uint32(code[i-4:]) == btiC {
			out[at-4] = slot
		}
	}
}
