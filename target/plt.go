package target

import (
	"debug/elf"
	"encoding/binary"
)

// Calls through the PLT. An IFUNC that no IRELATIVE relocation resolved
// (arm64 glibc's memcpy, memset and memmove, which libc itself never calls
// through its PLT) is bound by the dynamic linker only in the slots of the
// objects that call it. Such a slot tells where the IFUNC went once it is
// bound; before that, the object's PLT entry for it binds it on first use,
// exactly as the object's own calls do.

// BoundSlot returns the link-time address of this image's GOT slot for
// name (GLOB_DAT, bound at load, or JUMP_SLOT, bound at load or on the
// first call), whether it is a lazily bound one, and the symbol version it
// asks for.
func (s *Symbols) BoundSlot(name string) (slot uint64, lazy bool, version string, ok bool) {
	if slot, ok := s.gotSlots[name]; ok {
		return slot, false, s.slotVersion[slot], true
	}
	slot, ok = s.jumpSlots[name]
	return slot, true, s.slotVersion[slot], ok
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
// name: the code that jumps through its JUMP_SLOT.
func (s *Symbols) PLTEntry(name string) (uint64, bool) {
	slot, ok := s.jumpSlots[name]
	if !ok {
		return 0, false
	}
	entry, ok := s.pltBySlot[slot]
	return entry, ok
}

// loadPLT finds each PLT entry's slot by decoding the entries: the
// layout differs between linkers and with IBT/BTI, the loads do not.
func (s *Symbols) loadPLT(f *elf.File) {
	for _, sec := range f.Sections {
		if sec.Name != ".plt" && sec.Name != ".plt.sec" {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			continue
		}
		s.plt = append(s.plt, [2]uint64{sec.Addr, sec.Addr + sec.Size})
		switch f.Machine {
		case elf.EM_X86_64:
			pltX86(sec.Addr, data, s.pltBySlot)
		case elf.EM_AARCH64:
			pltARM64(sec.Addr, data, s.pltBySlot)
		}
	}
}

// pltX86 reads 16-byte entries whose indirect jump is `jmp *disp(%rip)`
// (ff 25), possibly after endbr64 and with a bnd prefix (f2).
func pltX86(addr uint64, data []byte, bySlot map[uint64]uint64) {
	for e := 0; e+16 <= len(data); e += 16 {
		for i := e; i+6 <= e+16; i++ {
			if data[i] == 0xff && data[i+1] == 0x25 {
				disp := int32(binary.LittleEndian.Uint32(data[i+2:]))
				slot := addr + uint64(i) + 6 + uint64(int64(disp))
				if _, seen := bySlot[slot]; !seen {
					bySlot[slot] = addr + uint64(e)
				}
				break
			}
		}
	}
}

// pltARM64 reads entries made of `adrp x16, slot; ldr x17, [x16, #lo12]`
// (then add and br x17), possibly after `bti c`.
func pltARM64(addr uint64, data []byte, bySlot map[uint64]uint64) {
	const bti = 0xd503245f
	for i := 0; i+8 <= len(data); i += 4 {
		adrp := binary.LittleEndian.Uint32(data[i:])
		ldr := binary.LittleEndian.Uint32(data[i+4:])
		if adrp&0x9f00001f != 0x90000010 || ldr&0xffc003ff != 0xf9400211 {
			continue
		}
		pc := addr + uint64(i)
		imm := int64(adrp>>29&3|(adrp>>5&0x7ffff)<<2) << 43 >> 43 // immlo:immhi, sign-extended 21 bits
		slot := uint64(int64(pc&^0xfff) + imm<<12 + int64(ldr>>10&0xfff)*8)
		entry := pc
		if i >= 4 && binary.LittleEndian.Uint32(data[i-4:]) == bti {
			entry -= 4
		}
		if _, seen := bySlot[slot]; !seen {
			bySlot[slot] = entry
		}
	}
}
