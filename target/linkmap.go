package target

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
)

// Memory reads the target's memory.
type Memory interface {
	ReadAt(p []byte, addr uint64) (int, error)
}

// LoadOrder returns images in the dynamic linker's link-map order, the
// order symbol lookup uses. It walks r_debug.r_map, found through the main
// executable's DT_DEBUG entry. Images the link map does not name (a static
// binary, or one whose loader does not fill DT_DEBUG) keep address order
// after the listed ones.
func LoadOrder(mem Memory, images []*Image) []*Image {
	ordered, err := linkMapOrder(mem, images)
	if err != nil {
		return images
	}
	seen := map[*Image]bool{}
	for _, img := range ordered {
		seen[img] = true
	}
	for _, img := range images {
		if !seen[img] {
			ordered = append(ordered, img)
		}
	}
	return ordered
}

func linkMapOrder(mem Memory, images []*Image) ([]*Image, error) {
	var main *Image
	for _, img := range images {
		if img.Main {
			main = img
		}
	}
	if main == nil {
		return nil, errors.New("no main image")
	}
	f, err := elf.Open(main.File)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var dyn *elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_DYNAMIC {
			dyn = p
		}
	}
	if dyn == nil || dyn.Memsz > 1<<20 {
		return nil, errors.New("no dynamic segment")
	}
	buf := make([]byte, dyn.Memsz)
	if _, err := mem.ReadAt(buf, main.Bias+dyn.Vaddr); err != nil {
		return nil, err
	}
	var rdebug uint64
	for off := 0; off+16 <= len(buf); off += 16 {
		tag := binary.LittleEndian.Uint64(buf[off:])
		if tag == uint64(elf.DT_DEBUG) {
			rdebug = binary.LittleEndian.Uint64(buf[off+8:])
		}
		if tag == uint64(elf.DT_NULL) {
			break
		}
	}
	if rdebug == 0 {
		return nil, errors.New("DT_DEBUG not set")
	}
	word := make([]byte, 8)
	read := func(addr uint64) (uint64, error) {
		if _, err := mem.ReadAt(word, addr); err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint64(word), nil
	}
	// struct r_debug { int r_version; struct link_map *r_map; ... }
	lm, err := read(rdebug + 8)
	if err != nil {
		return nil, err
	}
	byBias := map[uint64][]*Image{}
	for _, img := range images {
		byBias[img.Bias] = append(byBias[img.Bias], img)
	}
	var out []*Image
	// struct link_map { l_addr; l_name; l_ld; l_next; l_prev; }: public ABI.
	for n := 0; lm != 0 && n < 4096; n++ {
		node := make([]byte, 40)
		if _, err := mem.ReadAt(node, lm); err != nil {
			return nil, err
		}
		addr := binary.LittleEndian.Uint64(node[0:])
		namePtr := binary.LittleEndian.Uint64(node[8:])
		name := ""
		if namePtr != 0 {
			nb := make([]byte, 256)
			if n, _ := mem.ReadAt(nb, namePtr); n > 0 {
				if i := bytes.IndexByte(nb[:n], 0); i >= 0 {
					name = string(nb[:i])
				}
			}
		}
		for _, img := range byBias[addr] {
			if (name == "" && img.Main) || name == img.Path || (name != "" && !img.Main) {
				out = append(out, img)
				break
			}
		}
		lm = binary.LittleEndian.Uint64(node[24:])
	}
	if len(out) == 0 {
		return nil, errors.New("empty link map")
	}
	return out, nil
}

// FindSyscallInsn returns the address of an existing system call
// instruction in one of the images' executable mappings, checked against
// the running bytes. Reusing one means the target's code is never written
// to make remote system calls.
func FindSyscallInsn(mem Memory, images []*Image, insn []byte) (uint64, error) {
	return FindAlignedInsn(mem, images, insn, 1)
}

// FindAlignedInsn is FindSyscallInsn for an instruction set whose
// instructions start at multiples of align (4 on arm64): a match at any
// other offset is data, or parts of two instructions.
func FindAlignedInsn(mem Memory, images []*Image, insn []byte, align uint64) (uint64, error) {
	align = max(align, 1)
	for _, img := range images {
		for _, m := range img.Maps {
			if !m.Exec() {
				continue
			}
			const chunk = 64 << 10
			buf := make([]byte, chunk+len(insn))
			for addr := m.Start; addr < m.End; addr += chunk {
				n, _ := mem.ReadAt(buf[:min(uint64(len(buf)), m.End-addr)], addr)
				for off := 0; off < n; {
					i := bytes.Index(buf[off:n], insn)
					if i < 0 {
						break
					}
					if at := addr + uint64(off+i); at%align == 0 {
						return at, nil
					}
					off += i + 1
				}
			}
		}
	}
	return 0, errors.New("no system call instruction found in the target's code")
}
