package link

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/patchfile"
)

var (
	// ErrUnresolved means symbols could not be resolved.
	ErrUnresolved = errors.New("unresolved symbols")
	// ErrNotSupported means the patch uses something the linker refuses.
	ErrNotSupported = errors.New("not supported in a patch")
)

// UnresolvedError lists every symbol no object defines.
type UnresolvedError struct{ Names []string }

func (e *UnresolvedError) Error() string {
	return fmt.Sprintf("%v: %s (define them in the patch, or check the patch was built for this target)", ErrUnresolved, strings.Join(e.Names, ", "))
}

func (e *UnresolvedError) Is(target error) bool { return target == ErrUnresolved }

// Resolved is where a symbol outside the patch lives in the target.
type Resolved struct {
	Addr   uint64
	Size   uint64
	TLS    bool
	TPOff  int64  // for TLS symbols: the offset from the thread pointer
	Far    bool   // defined outside the base image, maybe beyond direct reach
	Origin string // the image that defines it
}

// Resolver finds a symbol the patch does not define. tls is true for
// references that need a thread-local variable. An error wrapping
// ErrNotSupported (the symbol exists in a form the patch cannot use) is
// reported as it is; any other error makes the symbol unresolved.
type Resolver func(name string, tls bool) (Resolved, error)

// gotSymbol names the GOT of the object being linked: here, the patch's own.
const gotSymbol = "_GLOBAL_OFFSET_TABLE_"

// maxSectionSize bounds one section: more than the patch could reach.
const maxSectionSize = 1 << 30

// Page is the granule regions are aligned to.
const Page = 4096

// Prot values for segments, as for mmap.
const (
	ProtRead  = 1
	ProtWrite = 2
	ProtExec  = 4
)

// Segment is a page-aligned part of the linked patch with one protection.
type Segment struct {
	Name string
	Off  uint64 // from the mapping base
	Data []byte // len(Data) is page-aligned
	Prot int
}

// Import is a symbol resolved in another loaded object.
type Import struct {
	Name   string
	Origin string
	Addr   uint64
}

type kind int

const (
	kText kind = iota
	kROData
	kData
	nKinds
)

type placed struct {
	sec  *patchfile.Section
	kind kind
	off  uint64 // offset inside its region
}

// Plan is a resolved, checked patch, ready to be linked at any base address
// that satisfies Window.
type Plan struct {
	spec       *patchfile.Spec
	arch       *arch.Arch
	headerSize uint64
	reserve    uint64
	// reserveData is writable space for the caller; dataReserveOff is
	// where it starts inside the data region.
	reserveData, dataReserveOff uint64
	// ehFrame is the patch's .eh_frame section index, 0 when it has none.
	ehFrame int

	placed    map[int]*placed // by ELF section index
	regionLen [nKinds]uint64
	regionOff [nKinds + 1]uint64 // last entry: GOT
	external  map[int]Resolved   // by symbol index
	tlsLocal  map[int]Resolved
	gotSlot   map[gotKey]int
	stub      map[int]int
	nGOT      int

	// Size is the whole mapping size, header included.
	Size uint64
	// MaxEnd is the highest address the mapping may end at (0: anywhere),
	// set when non-PIC code uses 32-bit absolute addresses.
	MaxEnd uint64
	// Imports lists the symbols taken from other loaded objects.
	Imports []Import
}

type gotKey struct {
	sym int
	tp  bool
}

// NewPlan resolves and checks spec. headerSize bytes at the start of the
// mapping are left for the caller's state record.
//
// reserveText bytes of executable memory are set aside after the patch's
// code for the caller (the engine puts its per-site stubs there).
// reserveData bytes of writable memory, 64-byte aligned, are set aside too.
func NewPlan(spec *patchfile.Spec, a *arch.Arch, headerSize, reserveText, reserveData uint64, resolve Resolver) (*Plan, error) {
	if spec.Machine != a.Machine {
		return nil, fmt.Errorf("patch is for %v, target is %v: %w", spec.Machine, a.Machine, ErrNotSupported)
	}
	p := &Plan{spec: spec, arch: a, headerSize: alignUp(headerSize, Page), reserve: alignUp(reserveText, 16), reserveData: alignUp(reserveData, 64), placed: map[int]*placed{},
		external: map[int]Resolved{}, tlsLocal: map[int]Resolved{}, gotSlot: map[gotKey]int{}, stub: map[int]int{}}
	for i := range spec.Sections {
		s := &spec.Sections[i]
		if s.Flags&elf.SHF_ALLOC == 0 || s.Size == 0 || skipSection(s.Name) {
			continue
		}
		if s.Flags&elf.SHF_TLS != 0 {
			continue // TLS symbols bind to the base's variables
		}
		if s.Size > maxSectionSize || s.Align > maxSectionSize {
			// Both come from the file; a bogus one would wrap the layout.
			return nil, fmt.Errorf("%w: section %s is %#x bytes, aligned to %#x", ErrNotSupported, s.Name, s.Size, s.Align)
		}
		k := kROData
		switch {
		case s.Flags&elf.SHF_EXECINSTR != 0:
			k = kText
		case s.Flags&elf.SHF_WRITE != 0:
			k = kData
		}
		align := max(s.Align, 1)
		off := alignUp(p.regionLen[k], align)
		p.placed[s.Index] = &placed{sec: s, kind: k, off: off}
		p.regionLen[k] = off + s.Size
		if s.Name == ".eh_frame" {
			// A linked .eh_frame ends with a zero-length entry (crtend.o
			// adds it); the unwinder stops reading there.
			p.ehFrame = s.Index
			p.regionLen[k] += 4
		}
	}
	p.dataReserveOff = alignUp(p.regionLen[kData], 64)
	p.regionLen[kData] = p.dataReserveOff + p.reserveData
	var unresolved []string
	seenUnresolved := map[string]bool{}
	tlsSection := func(idx elf.SectionIndex) bool {
		for i := range spec.Sections {
			if spec.Sections[i].Index == int(idx) {
				return spec.Sections[i].Flags&elf.SHF_TLS != 0
			}
		}
		return false
	}
	for i, sym := range spec.Symbols {
		if i == 0 || sym.Type == elf.STT_FILE {
			continue
		}
		defined := sym.Section != elf.SHN_UNDEF && sym.Section != elf.SHN_COMMON
		if defined && sym.Type == elf.STT_TLS && tlsSection(sym.Section) && anchorName(sym.Name) {
			// A label inside the patch's TLS section (an AArch64 mapping
			// symbol, a section anchor): relocations against it are bound
			// to the variable at their offset (tlsVar).
			continue
		}
		if defined && sym.Type == elf.STT_TLS && tlsSection(sym.Section) {
			// A TLS variable the patch defines is the base's own variable:
			// its storage already exists in every thread.
			r, err := resolve(sym.Name, true)
			if err != nil {
				return nil, fmt.Errorf("thread-local %s: %w (a patch cannot add thread-local storage)", sym.Name, err)
			}
			p.tlsLocal[i] = r
			continue
		}
		if defined {
			continue
		}
		if a.TLSCall != "" && sym.Name == a.TLSCall {
			continue // consumed by the TLS rewrite
		}
		if sym.Name == gotSymbol {
			continue // the patch's own GOT
		}
		r, err := resolve(sym.Name, sym.Type == elf.STT_TLS)
		if errors.Is(err, ErrNotSupported) {
			// Found, but not in a form the patch can use: say why.
			return nil, fmt.Errorf("%s: %w", sym.Name, err)
		}
		if err != nil {
			if sym.Bind == elf.STB_WEAK {
				p.external[i] = Resolved{}
				continue
			}
			if !seenUnresolved[sym.Name] {
				seenUnresolved[sym.Name] = true
				unresolved = append(unresolved, sym.Name)
			}
			continue
		}
		p.external[i] = r
		if r.Far {
			p.Imports = append(p.Imports, Import{Name: sym.Name, Origin: r.Origin, Addr: r.Addr})
		}
	}
	if len(unresolved) > 0 {
		sort.Strings(unresolved)
		return nil, &UnresolvedError{Names: unresolved}
	}
	// Check every relocation and collect GOT slots and stubs.
	anchored := map[elf.SectionIndex]bool{}
	for _, idx := range p.sectionOrder() {
		pl := p.placed[idx]
		for _, r := range pl.sec.Relocs {
			info, ok := a.Relocs[r.Type]
			if !ok {
				return nil, p.relocErr(pl.sec, r, fmt.Errorf("type %d: %w", r.Type, arch.ErrUnsupportedReloc))
			}
			if r.Symbol <= 0 || r.Symbol >= len(spec.Symbols) {
				return nil, p.relocErr(pl.sec, r, errors.New("bad symbol index"))
			}
			sym := spec.Symbols[r.Symbol]
			ext, isExt := p.external[r.Symbol]
			_, isTLSLocal := p.tlsLocal[r.Symbol]
			if !isExt && !isTLSLocal && tlsSection(sym.Section) && info.Need == arch.NeedTPOff {
				if _, isTLSLocal = p.tlsVar(r.Symbol, r.Addend); isTLSLocal {
					anchored[sym.Section] = true
				}
			}
			if !isExt && !isTLSLocal && sym.Section != elf.SHN_ABS && sym.Section != elf.SHN_UNDEF {
				if _, ok := p.placed[int(sym.Section)]; !ok && sym.Section < elf.SHN_LORESERVE {
					if tlsSection(sym.Section) {
						return nil, p.relocErr(pl.sec, r, fmt.Errorf("%w: reference to the patch's own thread-local section; declare the base's variable extern __thread", ErrNotSupported))
					}
					return nil, p.relocErr(pl.sec, r, fmt.Errorf("%w: reference into a section that is not loaded", ErrNotSupported))
				}
			}
			switch info.Need {
			case arch.NeedGOT:
				p.addGOT(gotKey{sym: r.Symbol})
			case arch.NeedGOTTPOff:
				p.addGOT(gotKey{sym: r.Symbol, tp: true})
			case arch.NeedPLT:
				// A call reaching less far than the patch may lie from
				// the image gets a stub for any target outside the patch.
				// An undefined weak symbol is 0, out of any direct reach.
				if isExt && (ext.Far || ext.Addr == 0 || a.CallReach > 0 && a.CallReach < a.Reach()) {
					if _, ok := p.stub[r.Symbol]; !ok {
						p.stub[r.Symbol] = len(p.stub)
						p.addGOT(gotKey{sym: r.Symbol})
					}
				}
			case arch.NeedNear:
				if isExt && ext.Far {
					return nil, p.relocErr(pl.sec, r, fmt.Errorf("%w: direct reference to %s in %s, which may be out of reach; compile the patch with -fPIC", ErrNotSupported, sym.Name, ext.Origin))
				}
			}
			if info.Need == arch.NeedTPOff || info.Need == arch.NeedGOTTPOff {
				if !isExt && !isTLSLocal {
					return nil, p.relocErr(pl.sec, r, fmt.Errorf("%w: thread-local reference to a non-TLS symbol", ErrNotSupported))
				}
			}
			if info.Absolute32 {
				p.MaxEnd = minNonZero(p.MaxEnd, 1<<32)
			}
			if info.Signed32 {
				p.MaxEnd = minNonZero(p.MaxEnd, 1<<31)
			}
		}
	}
	// Code that reaches thread-local variables through one anchor (AArch64
	// section anchors) adds fixed offsets to it: the base's variables must
	// lie at the same distances from each other as the patch's do.
	for sec := range anchored {
		var shift int64
		first := true
		for i, r := range p.tlsLocal {
			if v := spec.Symbols[i]; v.Section == sec {
				d := r.TPOff - int64(v.Value)
				if !first && d != shift {
					return nil, fmt.Errorf("%w: the patch reaches its thread-local variables through a section anchor, and the target lays them out differently; compile the patch with -fno-section-anchors", ErrNotSupported)
				}
				shift, first = d, false
			}
		}
	}
	// Stubs go at the end of the text region.
	p.regionLen[kText] = alignUp(p.regionLen[kText], 16) + uint64(len(p.stub)*a.StubLen)
	p.regionLen[kText] = alignUp(p.regionLen[kText], 16) + p.reserve
	off := p.headerSize
	for k := kind(0); k < nKinds; k++ {
		p.regionOff[k] = off
		off += alignUp(p.regionLen[k], Page)
	}
	p.regionOff[nKinds] = off
	off += alignUp(uint64(p.nGOT*a.PtrSize), Page)
	p.Size = off
	return p, nil
}

func skipSection(name string) bool {
	// Notes are not needed to run the patch's code.
	return strings.HasPrefix(name, ".note") || name == ".comment"
}

func minNonZero(a, b uint64) uint64 {
	if a == 0 || b < a {
		return b
	}
	return a
}

func (p *Plan) addGOT(k gotKey) {
	if _, ok := p.gotSlot[k]; !ok {
		p.gotSlot[k] = p.nGOT
		p.nGOT++
	}
}

func (p *Plan) sectionOrder() []int {
	idx := make([]int, 0, len(p.placed))
	for i := range p.placed {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	return idx
}

func (p *Plan) relocErr(sec *patchfile.Section, r patchfile.Reloc, err error) error {
	name := fmt.Sprintf("type %d", r.Type)
	if info, ok := p.arch.Relocs[r.Type]; ok {
		name = info.Name
	}
	sym := "?"
	if r.Symbol >= 0 && r.Symbol < len(p.spec.Symbols) {
		sym = p.spec.Symbols[r.Symbol].Name
		if sym == "" {
			sym = "section symbol"
		}
	}
	return &arch.RelocError{Type: name, Symbol: sym, Section: sec.Name, Offset: r.Offset, Err: err}
}

// Linked is a patch linked at Base.
type Linked struct {
	Base     uint64
	Size     uint64
	Segments []Segment
	// Symbols maps the patch's defined function and object names to addresses.
	Symbols map[string]uint64
	// Reserved is the address of the executable space set aside by NewPlan.
	Reserved uint64
	// ReservedData is the address of the writable space set aside by NewPlan.
	ReservedData uint64
	// EHFrame is the address of the patch's terminated .eh_frame, 0 if none.
	EHFrame uint64
}

// Code returns the bytes of the linked patch at addr, for filling the
// reserved space before the patch is written.
func (l *Linked) Code(addr, n uint64) []byte {
	for _, seg := range l.Segments {
		start := l.Base + seg.Off
		if addr >= start && addr+n <= start+uint64(len(seg.Data)) {
			return seg.Data[addr-start : addr-start+n]
		}
	}
	return nil
}

// Link lays the patch out at base and applies every relocation.
func (p *Plan) Link(base uint64) (*Linked, error) {
	if p.MaxEnd != 0 && base+p.Size > p.MaxEnd {
		return nil, fmt.Errorf("patch uses 32-bit absolute addresses and must end below %#x: %w", p.MaxEnd, arch.ErrOutOfRange)
	}
	a := p.arch
	var regions [nKinds][]byte
	for k := kind(0); k < nKinds; k++ {
		regions[k] = make([]byte, alignUp(p.regionLen[k], Page))
	}
	got := make([]byte, alignUp(uint64(p.nGOT*a.PtrSize), Page))
	gotAddr := base + p.regionOff[nKinds]
	secAddr := func(idx int) uint64 {
		pl := p.placed[idx]
		return base + p.regionOff[pl.kind] + pl.off
	}
	for _, idx := range p.sectionOrder() {
		pl := p.placed[idx]
		copy(regions[pl.kind][pl.off:], pl.sec.Data) // nil Data (NOBITS) stays zero
	}
	symAddr := func(i int) uint64 {
		if r, ok := p.external[i]; ok {
			return r.Addr
		}
		s := p.spec.Symbols[i]
		switch {
		case s.Name == gotSymbol && s.Section == elf.SHN_UNDEF:
			return gotAddr
		case s.Section == elf.SHN_ABS:
			return s.Value
		case s.Section < elf.SHN_LORESERVE:
			if _, ok := p.placed[int(s.Section)]; ok {
				return secAddr(int(s.Section)) + s.Value
			}
		}
		return 0
	}
	reservedOff := p.regionOff[kText] + p.regionLen[kText] - p.reserve
	out := &Linked{Base: base, Size: p.Size, Symbols: map[string]uint64{}, Reserved: base + reservedOff,
		ReservedData: base + p.regionOff[kData] + p.dataReserveOff}
	if p.ehFrame != 0 {
		out.EHFrame = secAddr(p.ehFrame)
	}
	for i, s := range p.spec.Symbols {
		if i == 0 || s.Name == "" || (s.Type != elf.STT_FUNC && s.Type != elf.STT_OBJECT && s.Type != elf.STT_NOTYPE) {
			continue
		}
		if _, ok := p.placed[int(s.Section)]; ok && s.Section < elf.SHN_LORESERVE {
			out.Symbols[s.Name] = symAddr(i)
		}
	}
	for k, slot := range p.gotSlot {
		v := symAddr(k.sym)
		if k.tp {
			v = uint64(p.tpOff(k.sym))
		}
		binary.LittleEndian.PutUint64(got[slot*a.PtrSize:], v)
	}
	// Import call stubs sit right below the reserved space.
	stubBase := reservedOff - uint64(len(p.stub)*a.StubLen)
	for sym, n := range p.stub {
		at := stubBase + uint64(n*a.StubLen)
		code, err := a.EncodeStub(base+at, gotAddr+uint64(p.gotSlot[gotKey{sym: sym}]*a.PtrSize))
		if err != nil {
			return nil, err
		}
		copy(regions[kText][at-p.regionOff[kText]:], code)
	}
	for _, idx := range p.sectionOrder() {
		pl := p.placed[idx]
		data := regions[pl.kind][pl.off : pl.off+pl.sec.Size]
		relocs := append([]patchfile.Reloc(nil), pl.sec.Relocs...)
		sort.SliceStable(relocs, func(i, j int) bool { return relocs[i].Offset < relocs[j].Offset })
		var consumedUntil uint64
		for _, r := range relocs {
			if r.Offset < consumedUntil {
				continue // part of a TLS sequence already rewritten
			}
			rr := &arch.Reloc{Type: r.Type, Data: data, Offset: r.Offset, P: secAddr(idx) + r.Offset,
				S: symAddr(r.Symbol), A: r.Addend, GOT: gotAddr}
			if slot, ok := p.gotSlot[gotKey{sym: r.Symbol, tp: a.Relocs[r.Type].Need == arch.NeedGOTTPOff}]; ok {
				rr.G = gotAddr + uint64(slot*a.PtrSize)
			}
			if n, ok := p.stub[r.Symbol]; ok {
				rr.L = base + stubBase + uint64(n*a.StubLen)
			}
			if ext, ok := p.external[r.Symbol]; ok {
				rr.Size = ext.Size
			} else {
				rr.Size = p.spec.Symbols[r.Symbol].Size
			}
			need := a.Relocs[r.Type].Need
			if need == arch.NeedTPOff || need == arch.NeedGOTTPOff {
				rr.TPOff = p.tpOff(r.Symbol)
				if v, ok := p.tlsVar(r.Symbol, r.Addend); ok && need == arch.NeedTPOff {
					// Against an anchor: the variable's offset, shifted so
					// that the addend lands inside it.
					rr.TPOff = p.tlsLocal[v].TPOff + int64(p.spec.Symbols[r.Symbol].Value) - int64(p.spec.Symbols[v].Value)
				}
			}
			if err := a.Apply(rr); err != nil {
				return nil, p.relocErr(pl.sec, r, err)
			}
			if a.TLSSequence != nil {
				if n := a.TLSSequence(r.Type); n > 0 {
					consumedUntil = r.Offset + n
				}
			}
		}
	}
	names := [nKinds]string{"text", "rodata", "data"}
	prots := [nKinds]int{ProtRead | ProtExec, ProtRead, ProtRead | ProtWrite}
	for k := kind(0); k < nKinds; k++ {
		if len(regions[k]) > 0 {
			out.Segments = append(out.Segments, Segment{Name: names[k], Off: p.regionOff[k], Data: regions[k], Prot: prots[k]})
		}
	}
	if len(got) > 0 {
		out.Segments = append(out.Segments, Segment{Name: "got", Off: p.regionOff[nKinds], Data: got, Prot: ProtRead})
	}
	return out, nil
}

// anchorName reports a symbol that labels a place rather than naming a
// variable: AArch64 mapping symbols ($d, $x, $d.N) and local labels.
func anchorName(name string) bool {
	return name == "" || strings.HasPrefix(name, "$") || strings.HasPrefix(name, ".L")
}

// tlsVar finds, for a reference to sym+addend where sym is an anchor or
// section symbol in the patch's thread-local section, the variable the
// patch defines at that offset; it is bound to the base's variable.
func (p *Plan) tlsVar(sym int, addend int64) (int, bool) {
	s := p.spec.Symbols[sym]
	if _, ok := p.tlsLocal[sym]; ok || s.Section == elf.SHN_UNDEF || s.Section >= elf.SHN_LORESERVE {
		return 0, false
	}
	if s.Type != elf.STT_SECTION && !(s.Type == elf.STT_TLS && anchorName(s.Name)) {
		return 0, false
	}
	off := s.Value + uint64(addend)
	for i := range p.tlsLocal {
		v := p.spec.Symbols[i]
		if v.Section == s.Section && off >= v.Value && off < v.Value+max(v.Size, 1) {
			return i, true
		}
	}
	return 0, false
}

func (p *Plan) tpOff(sym int) int64 {
	if r, ok := p.tlsLocal[sym]; ok {
		return r.TPOff
	}
	return p.external[sym].TPOff
}

func alignUp(v, a uint64) uint64 {
	if a <= 1 {
		return v
	}
	return (v + a - 1) / a * a
}
