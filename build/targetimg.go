package build

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/hotpatch/hotpatch/target"
)

// targetImage is the binary the patch is for.
type targetImage struct {
	path    string
	buildID string
	syms    *target.Symbols
	progs   []*elf.Prog
	f       *elf.File
	anchor  *target.Symbol
	mach    *machine
	plt     map[uint64]string // PLT entry address -> the symbol its slot is for
	got     map[uint64]string // GOT slot address -> its symbol (JUMP_SLOT, GLOB_DAT)
	// dyn holds every dynamic relocation by the address it fills.
	dyn map[uint64]target.DynamicReloc
	// tlsBias is the distance from the thread pointer to the start of the
	// executable's thread-local block (aarch64: 16 bytes of TCB, rounded up
	// to the block's alignment; x86-64: minus the block's aligned size);
	// tlsOK says there is such a block.
	tlsBias int64
	tlsOK   bool
}

func openTarget(path string) (*targetImage, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := machineFor(f.Machine)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	id, err := target.BuildID(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w (link the target with --build-id)", path, err)
	}
	syms, err := target.LoadSymbols(path, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	if syms.Source == ".dynsym" {
		f.Close()
		return nil, fmt.Errorf("%s: %w: the target has no .symtab and no debug file; its static functions and data cannot be found", path, ErrUnsupported)
	}
	t := &targetImage{path: path, buildID: id, syms: syms, progs: f.Progs, f: f, mach: m}
	t.plt, t.got = readPLT(f, m)
	t.dyn = map[uint64]target.DynamicReloc{}
	target.DynamicRelocs(f, func(r target.DynamicReloc) { t.dyn[r.Offset] = r })
	for _, p := range f.Progs {
		if p.Type == elf.PT_TLS {
			t.tlsBias, t.tlsOK = m.tlsBias(p), true
		}
	}
	return t, nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

// tpOff is the thread-pointer offset of an offset in the executable's
// thread-local block, as local exec code and resolved initial-exec GOT
// slots hold it.
func (t *targetImage) tpOff(off uint64) uint64 { return uint64(int64(off) + t.tlsBias) }

// gotValue returns the address a GOT slot that no symbol names holds: the
// addend of its RELATIVE relocation (position-independent) or, without a
// dynamic relocation, the address the linker wrote into it. ok is false
// for a slot the dynamic linker fills otherwise.
func (t *targetImage) gotValue(slot uint64) (uint64, bool) {
	if r, ok := t.dyn[slot]; ok {
		if r.Type == t.mach.relative && r.Symbol == "" {
			return r.Addend, true
		}
		return 0, false
	}
	b, ok := t.read(slot, 8)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b), true
}

// pltName names the symbol whose PLT entry is at addr; ok is false if
// addr is no PLT entry, name "" for an entry whose symbol is unknown.
func (t *targetImage) pltName(addr uint64) (name string, ok bool) {
	name, ok = t.plt[addr]
	return name, ok
}

// readPLT maps each GOT slot the dynamic linker fills with a symbol's
// address (JUMP_SLOT, GLOB_DAT) to that symbol, and each PLT entry to the
// symbol of the slot it jumps through.
func readPLT(f *elf.File, m *machine) (map[uint64]string, map[uint64]string) {
	out, slots := map[uint64]string{}, map[uint64]string{}
	target.DynamicRelocs(f, func(r target.DynamicReloc) {
		if (r.Type == m.jumpSlot || r.Type == m.globDat) && r.Symbol != "" {
			slots[r.Offset] = r.Symbol
		}
	})
	for entry, slot := range target.PLTEntries(f) {
		// PLT0 or an IFUNC slot: an entry of no name.
		out[entry] = slots[slot]
	}
	return out, slots
}

func (t *targetImage) close() { t.f.Close() }

// read returns n bytes at link-time address addr from the file.
func (t *targetImage) read(addr, n uint64) ([]byte, bool) {
	for _, p := range t.progs {
		if p.Type == elf.PT_LOAD && addr >= p.Vaddr && addr+n <= p.Vaddr+p.Filesz {
			buf := make([]byte, n)
			if _, err := p.ReadAt(buf, int64(addr-p.Vaddr)); err != nil {
				return nil, false
			}
			return buf, true
		}
	}
	return nil, false
}

// lookup finds the target's copy of a symbol of an object compiled from
// file: a local by name and file, a global by name.
func (t *targetImage) lookup(s *symbol, file string) (target.Symbol, error) {
	if s.local() {
		return t.syms.Lookup(s.name, file)
	}
	return t.syms.Lookup(s.name, "")
}

// uniqueByName reports whether the engine, which binds undefined names
// with Lookup(name, ""), finds exactly ts.
func (t *targetImage) uniqueByName(ts target.Symbol) bool {
	got, err := t.syms.Lookup(ts.Name, "")
	return err == nil && got.Value == ts.Value && got.Type == ts.Type
}

// anchorFor picks a global symbol of the target that the engine binds by
// name unambiguously; a reference to a local symbol whose name is not
// unique is written as anchor+offset. avoid lists names the patch defines.
func (t *targetImage) anchorFor(avoid map[string]bool) (*target.Symbol, error) {
	if t.anchor != nil && !avoid[t.anchor.Name] {
		return t.anchor, nil
	}
	var cands []target.Symbol
	for _, s := range t.syms.All {
		if s.Bind == elf.STB_LOCAL || s.Type == elf.STT_TLS || s.Section == elf.SHN_UNDEF || s.Section >= elf.SHN_LORESERVE ||
			(s.Type != elf.STT_FUNC && s.Type != elf.STT_OBJECT) || avoid[s.Name] {
			continue
		}
		cands = append(cands, s)
	}
	sort.Slice(cands, func(i, j int) bool {
		if (cands[i].Type == elf.STT_FUNC) != (cands[j].Type == elf.STT_FUNC) {
			return cands[i].Type == elf.STT_FUNC
		}
		// Prefer the program's own names to the toolchain's (_init, _fini).
		if u1, u2 := strings.HasPrefix(cands[i].Name, "_"), strings.HasPrefix(cands[j].Name, "_"); u1 != u2 {
			return u2
		}
		return cands[i].Name < cands[j].Name
	})
	for i := range cands {
		if t.uniqueByName(cands[i]) {
			t.anchor = &cands[i]
			return t.anchor, nil
		}
	}
	return nil, fmt.Errorf("%w: %s has no global symbol to address its local symbols from", ErrUnsupported, t.path)
}
