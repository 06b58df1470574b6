package target

import (
	"debug/elf"
	"errors"
	"fmt"

	"path/filepath"
	"sort"
	"strings"
)

var (
	// ErrSymbolNotFound means no symbol of that name is defined.
	ErrSymbolNotFound = errors.New("symbol not found")
	// ErrAmbiguousSymbol means several local symbols share the name.
	ErrAmbiguousSymbol = errors.New("ambiguous symbol")
	// ErrNoSymbols means an image has neither .symtab, .dynsym nor a debug file.
	ErrNoSymbols = errors.New("no symbol table")
)

// SymbolError names the symbol a lookup failed for.
type SymbolError struct {
	Name       string
	Image      string
	Candidates []string // for ambiguous names: "name@file"
	Err        error
}

func (e *SymbolError) Error() string {
	msg := fmt.Sprintf("symbol %s in %s: %v", e.Name, e.Image, e.Err)
	if len(e.Candidates) > 0 {
		msg += fmt.Sprintf(" (candidates %s; name the source file as NAME@FILE)", strings.Join(e.Candidates, ", "))
	}
	return msg
}

func (e *SymbolError) Unwrap() error { return e.Err }

// Symbol is a defined symbol of an image, at its link-time address.
type Symbol struct {
	Name    string
	Value   uint64
	Size    uint64
	Type    elf.SymType
	Bind    elf.SymBind
	Section elf.SectionIndex
	File    string // the STT_FILE a local symbol belongs to
	Version string
}

// TLSSegment describes an image's PT_TLS.
type TLSSegment struct {
	Vaddr, MemSize, Align uint64
}

// Symbols is the symbol table of one image.
type Symbols struct {
	Image  string
	Source string // ".symtab", ".dynsym" or the debug file used
	All    []Symbol
	TLS    *TLSSegment
	byName map[string][]int
	starts []uint64 // sorted addresses of defined symbols
	secEnd map[elf.SectionIndex]uint64
	dyn    map[string]int // default-version dynamic symbols, index into dynAll
	dynAll []Symbol
	irel   map[uint64]uint64
	// gotSlots maps symbol names to the GOT slots of GLOB_DAT relocations.
	gotSlots map[string]uint64
	// slots lists, per symbol name, every GLOB_DAT and JUMP_SLOT slot (an
	// object may reference several versions of one name).
	slots map[string][]slotRef
	// plt are the PLT sections' address ranges; pltBySlot maps a
	// JUMP_SLOT to the PLT entry that jumps through it.
	plt       [][2]uint64
	pltBySlot map[uint64]uint64
	// slotVersion is the symbol version each GOT slot asks for.
	slotVersion map[uint64]string
}

// LoadSymbols reads the symbols of an ELF file: .symtab, else .dynsym plus
// the build-id debug file under /usr/lib/debug/.build-id when present.
func LoadSymbols(path, name string) (*Symbols, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	defer f.Close()
	s := &Symbols{Image: name, byName: map[string][]int{}, secEnd: map[elf.SectionIndex]uint64{}, dyn: map[string]int{}, irel: map[uint64]uint64{}, gotSlots: map[string]uint64{},
		slots: map[string][]slotRef{}, pltBySlot: map[uint64]uint64{}, slotVersion: map[uint64]string{}}
	for i, sec := range f.Sections {
		s.secEnd[elf.SectionIndex(i)] = sec.Addr + sec.Size
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_TLS {
			s.TLS = &TLSSegment{Vaddr: p.Vaddr, MemSize: p.Memsz, Align: p.Align}
		}
	}
	syms, symErr := f.Symbols()
	s.Source = ".symtab"
	if symErr != nil || len(syms) == 0 {
		if id, err := BuildID(f); err == nil && len(id) > 2 {
			dbg := filepath.Join("/usr/lib/debug/.build-id", id[:2], id[2:]+".debug")
			if df, err := elf.Open(dbg); err == nil {
				syms, symErr = df.Symbols()
				df.Close()
				s.Source = dbg
			}
		}
	}
	dyn, dynErr := f.DynamicSymbols()
	if symErr != nil || len(syms) == 0 {
		syms, s.Source = dyn, ".dynsym"
	}
	if len(syms) == 0 {
		return nil, fmt.Errorf("%s: %w (install its debug symbols or rebuild without stripping)", name, ErrNoSymbols)
	}
	file := ""
	for _, es := range syms {
		typ, bind := elf.ST_TYPE(es.Info), elf.ST_BIND(es.Info)
		if typ == elf.STT_FILE {
			file = es.Name
			continue
		}
		if es.Section == elf.SHN_UNDEF || es.Name == "" || typ == elf.STT_SECTION {
			continue
		}
		sym := Symbol{Name: es.Name, Value: es.Value, Size: es.Size, Type: typ, Bind: bind, Section: es.Section, Version: es.Version}
		if bind == elf.STB_LOCAL {
			sym.File = file
		}
		s.byName[sym.Name] = append(s.byName[sym.Name], len(s.All))
		// ld names the copies it makes of a library's data in an
		// executable (stdout, a type_info) NAME@VERSION in .symtab; a new
		// reference by plain name must bind to that copy, as the program's
		// own references do.
		if at := strings.IndexByte(sym.Name, '@'); at > 0 && bind != elf.STB_LOCAL {
			plain := sym.Name[:at]
			s.byName[plain] = append(s.byName[plain], len(s.All))
		}
		s.All = append(s.All, sym)
		if typ != elf.STT_TLS && es.Section < elf.SHN_LORESERVE {
			s.starts = append(s.starts, sym.Value)
		}
	}
	sort.Slice(s.starts, func(i, j int) bool { return s.starts[i] < s.starts[j] })
	if dynErr == nil {
		for _, es := range dyn {
			typ, bind := elf.ST_TYPE(es.Info), elf.ST_BIND(es.Info)
			// STB_LOOS is STB_GNU_UNIQUE on GNU systems (g++'s template statics).
			if es.Section == elf.SHN_UNDEF || (bind != elf.STB_GLOBAL && bind != elf.STB_WEAK && bind != elf.STB_LOOS) {
				continue
			}
			if es.HasVersion && es.VersionIndex.IsHidden() {
				continue // only the default version binds new references
			}
			s.dyn[es.Name] = len(s.dynAll)
			s.dynAll = append(s.dynAll, Symbol{Name: es.Name, Value: es.Value, Size: es.Size, Type: typ, Bind: bind, Section: es.Section, Version: es.Version})
		}
	}
	s.loadDynamicSlots(f)
	return s, nil
}

// loadDynamicSlots records, from the dynamic relocations, the slot that
// holds each IFUNC's resolved address (keyed by the resolver's address),
// the GOT slot of each symbol reached through a GLOB_DAT or a JUMP_SLOT,
// and the PLT entries.
func (s *Symbols) loadDynamicSlots(f *elf.File) {
	if f.Machine != elf.EM_X86_64 && f.Machine != elf.EM_AARCH64 {
		return
	}
	irelative, globDat, jumpSlot := uint32(elf.R_X86_64_IRELATIVE), uint32(elf.R_X86_64_GLOB_DAT), uint32(elf.R_X86_64_JMP_SLOT)
	if f.Machine == elf.EM_AARCH64 {
		irelative, globDat, jumpSlot = uint32(elf.R_AARCH64_IRELATIVE), uint32(elf.R_AARCH64_GLOB_DAT), uint32(elf.R_AARCH64_JUMP_SLOT)
	}
	DynamicRelocs(f, func(r DynamicReloc) {
		switch {
		case r.Type == irelative:
			s.irel[r.Addend] = r.Offset
		case r.Type == globDat && r.Symbol != "":
			s.gotSlots[r.Symbol] = r.Offset
			s.slots[r.Symbol] = append(s.slots[r.Symbol], slotRef{slot: r.Offset})
			s.slotVersion[r.Offset] = r.Version
		case r.Type == jumpSlot && r.Symbol != "":
			s.slots[r.Symbol] = append(s.slots[r.Symbol], slotRef{slot: r.Offset, lazy: true})
			s.slotVersion[r.Offset] = r.Version
		}
	})
	s.loadPLT(f)
}

// DynamicReloc is one RELA entry the dynamic linker applies.
type DynamicReloc struct {
	Offset uint64 // link-time address of the relocated field
	Type   uint32
	Symbol string // "" for relocations without a symbol
	// Version is the symbol version the relocation asks for ("" when none).
	Version string
	Addend  uint64
}

// DynamicRelocs calls fn for every entry of f's allocated RELA sections
// (.rela.dyn, .rela.plt).
func DynamicRelocs(f *elf.File, fn func(DynamicReloc)) {
	dyn, _ := f.DynamicSymbols() // index i+1 in relocations: the null symbol is left out
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_RELA || sec.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			continue
		}
		for off := 0; off+24 <= len(data); off += 24 {
			info := f.ByteOrder.Uint64(data[off+8:])
			r := DynamicReloc{Offset: f.ByteOrder.Uint64(data[off:]), Type: uint32(info), Addend: f.ByteOrder.Uint64(data[off+16:])}
			if i := int(info>>32) - 1; i >= 0 && i < len(dyn) {
				r.Symbol, r.Version = dyn[i].Name, dyn[i].Version
			}
			fn(r)
		}
	}
}

// GOTSlot returns the link-time address of the GOT slot through which this
// image reaches the named symbol, when it has one. At run time the slot
// holds whatever definition the dynamic linker bound, which for a
// library's exported data may be a copy in the executable.
func (s *Symbols) GOTSlot(name string) (uint64, bool) {
	slot, ok := s.gotSlots[name]
	return slot, ok
}

// Lookup finds a defined symbol by name. A global symbol wins over locals;
// several locals of one name need file (the STT_FILE name) to choose.
func (s *Symbols) Lookup(name, file string) (Symbol, error) {
	idx := s.byName[name]
	var globals, locals []int
	for _, i := range idx {
		if s.All[i].Bind == elf.STB_LOCAL {
			if file == "" || s.All[i].File == file || filepath.Base(s.All[i].File) == filepath.Base(file) {
				locals = append(locals, i)
			}
		} else if file == "" {
			globals = append(globals, i)
		}
	}
	switch {
	case len(globals) > 0:
		// The plain name, then the default version (NAME@@VER); NAME@VER
		// is an older version unless it is the only one (an executable's
		// copy of a library's data).
		best := globals[0]
		for _, i := range globals[1:] {
			if versionRank(s.All[i].Name, name) < versionRank(s.All[best].Name, name) {
				best = i
			}
		}
		return s.All[best], nil
	case len(locals) == 1:
		return s.All[locals[0]], nil
	case len(locals) > 1:
		// The same local can appear twice when .symtab repeats it; accept if identical.
		first := s.All[locals[0]]
		same := true
		var cands []string
		for _, i := range locals {
			c := s.All[i]
			cands = append(cands, c.Name+"@"+c.File)
			if c.Value != first.Value {
				same = false
			}
		}
		if same {
			return first, nil
		}
		return Symbol{}, &SymbolError{Name: name, Image: s.Image, Candidates: cands, Err: ErrAmbiguousSymbol}
	}
	if file != "" {
		return Symbol{}, &SymbolError{Name: name + "@" + file, Image: s.Image, Err: ErrSymbolNotFound}
	}
	return Symbol{}, &SymbolError{Name: name, Image: s.Image, Err: ErrSymbolNotFound}
}

// LookupDynamic finds an exported default-version symbol, as the dynamic
// linker would bind a new reference to it.
func (s *Symbols) LookupDynamic(name string) (Symbol, bool) {
	i, ok := s.dyn[name]
	if !ok {
		return Symbol{}, false
	}
	return s.dynAll[i], true
}

// IFuncSlot returns the link-time address of the slot the dynamic linker
// filled with the resolved target of the IFUNC whose resolver is at resolver.
func (s *Symbols) IFuncSlot(resolver uint64) (uint64, bool) {
	slot, ok := s.irel[resolver]
	return slot, ok
}

// Room returns how many bytes from addr up to the next symbol or the end of
// its section, whichever comes first: the most a trampoline may overwrite.
func (s *Symbols) Room(sym Symbol) uint64 {
	end := sym.Value + sym.Size
	if e, ok := s.secEnd[sym.Section]; ok && e > sym.Value {
		end = e
	}
	i := sort.Search(len(s.starts), func(i int) bool { return s.starts[i] > sym.Value })
	if i < len(s.starts) && s.starts[i] < end {
		end = s.starts[i]
	}
	if s.Source == ".dynsym" {
		// Static functions are not listed: the bytes past the function
		// may be one of them rather than padding.
		end = min(end, sym.Value+sym.Size)
	}
	return end - sym.Value
}

// ReadFunction returns the bytes of a function symbol from the file.
func ReadFunction(path string, sym Symbol) ([]byte, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && sym.Value >= p.Vaddr && sym.Value+sym.Size <= p.Vaddr+p.Filesz {
			buf := make([]byte, sym.Size)
			if _, err := p.ReadAt(buf, int64(sym.Value-p.Vaddr)); err != nil {
				return nil, err
			}
			return buf, nil
		}
	}
	return nil, fmt.Errorf("%s: %#x+%d is not in a loaded segment", sym.Name, sym.Value, sym.Size)
}

// versionRank orders the .symtab names a plain-name lookup may bind to.
func versionRank(symName, name string) int {
	switch {
	case symName == name:
		return 0
	case strings.HasPrefix(symName, name+"@@"):
		return 1
	}
	return 2
}
