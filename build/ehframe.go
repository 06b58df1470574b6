package build

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hotpatch/hotpatch/internal/leb128"
)

// Unwind information. Every function of the patch needs its FDE in the
// patch's .eh_frame, or an exception (or a backtrace, or a thread
// cancellation) passing through the patch's code ends there and a C++
// program calls std::terminate. The engine registers the patch's
// .eh_frame with the target's unwinder.
//
// The patch's .eh_frame is made from the compiler's: each FDE whose code
// is in the patch is copied with its CIE (one copy of each distinct CIE),
// and every other relocation of the two (the CIE's personality routine,
// the FDE's language-specific data area in .gcc_except_table) is followed
// like a relocation of code, which brings in the LSDA and, through it, the
// type_info references of catch clauses. FDEs of functions the patch does
// not carry are left out: their code is the target's, which has its own.

// DWARF exception-header pointer encodings (DW_EH_PE_*).
const (
	pePtr     = 0x00 // absptr
	peULEB    = 0x01
	peU2      = 0x02
	peU4      = 0x03
	peU8      = 0x04
	peSLEB    = 0x09
	peS2      = 0x0a
	peS4      = 0x0b
	peS8      = 0x0c
	peAligned = 0x50
	peOmit    = 0xff
)

var errEHFrame = errors.New("malformed .eh_frame")

// ehEntry is one CIE or FDE of an .eh_frame section. Offsets are relative
// to the start of the section.
type ehEntry struct {
	off, size uint64 // size includes the length field
	cie       bool

	// CIE fields.
	version                  byte
	aug                      string
	fdeEnc, lsdaEnc, persEnc byte
	persOff                  int64 // personality pointer, -1 if none

	// FDE fields.
	cieOff  uint64 // the entry's CIE
	ptrOff  uint64 // the CIE pointer field
	pcBegin uint64 // pc_begin field
	pcSize  int    // width of pc_begin
	pcRange uint64 // pc_range value
	lsdaOff int64  // LSDA pointer, -1 if none
}

// parseEHFrame splits an .eh_frame section into its CIEs and FDEs and
// decodes the fields that carry addresses, following the CIE's
// augmentation ("zR", "zPLR", ...) and pointer encodings. A zero-length
// entry ends the table.
func parseEHFrame(data []byte) ([]ehEntry, error) {
	le := binary.LittleEndian
	var out []ehEntry
	cies := map[uint64]int{}
	for off := uint64(0); off < uint64(len(data)); {
		if off+4 > uint64(len(data)) {
			return nil, fmt.Errorf("%w: truncated entry at %#x", errEHFrame, off)
		}
		length := uint64(le.Uint32(data[off:]))
		if length == 0 {
			break
		}
		if length == 0xffffffff {
			return nil, fmt.Errorf("%w: 64-bit entry at %#x", ErrUnsupported, off)
		}
		end := off + 4 + length
		if end > uint64(len(data)) || length < 4 {
			return nil, fmt.Errorf("%w: entry at %#x runs past the end", errEHFrame, off)
		}
		id := le.Uint32(data[off+4:])
		e := ehEntry{off: off, size: end - off, cie: id == 0, persOff: -1, lsdaOff: -1, ptrOff: off + 4}
		if !e.cie {
			if uint64(id) > off+4 {
				return nil, fmt.Errorf("%w: FDE at %#x points before the section", errEHFrame, off)
			}
			e.cieOff = off + 4 - uint64(id)
		}
		out = append(out, e)
		if e.cie {
			cies[off] = len(out) - 1
		}
		off = end
	}
	for i := range out {
		if out[i].cie {
			if err := parseCIE(data, &out[i]); err != nil {
				return nil, err
			}
		}
	}
	for i := range out {
		e := &out[i]
		if e.cie {
			continue
		}
		ci, ok := cies[e.cieOff]
		if !ok {
			return nil, fmt.Errorf("%w: FDE at %#x: no CIE at %#x", errEHFrame, e.off, e.cieOff)
		}
		if err := parseFDE(data, e, &out[ci]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ehReader reads the fields of one entry, never past its end.
type ehReader struct {
	data []byte
	p    uint64
	end  uint64
	at   uint64 // the entry, for messages
	err  error
}

func (r *ehReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: entry at %#x: %s", errEHFrame, r.at, what)
	}
}

func (r *ehReader) byte() byte {
	if r.p >= r.end {
		r.fail("truncated")
		return 0
	}
	b := r.data[r.p]
	r.p++
	return b
}

func (r *ehReader) uleb() uint64 {
	if r.p >= r.end || r.end > uint64(len(r.data)) {
		r.fail("truncated")
		return 0
	}
	v, n, ok := leb128.Unsigned(r.data[r.p:r.end])
	r.p += uint64(n)
	if !ok {
		r.fail("truncated")
		return 0
	}
	return v
}

func (r *ehReader) sleb() int64 {
	if r.p >= r.end || r.end > uint64(len(r.data)) {
		r.fail("truncated")
		return 0
	}
	v, n, ok := leb128.Signed(r.data[r.p:r.end])
	r.p += uint64(n)
	if !ok {
		r.fail("truncated")
		return 0
	}
	return v
}

func (r *ehReader) cstring() string {
	start := r.p
	for r.byte() != 0 {
		if r.err != nil {
			return ""
		}
	}
	return string(r.data[start : r.p-1])
}

// pointer skips a pointer in encoding enc and returns its offset, its
// width and its value as stored (before any pc-relative adjustment).
func (r *ehReader) pointer(enc byte) (at uint64, size int, val uint64) {
	at = r.p
	if enc == peOmit {
		return at, 0, 0
	}
	if enc&0x70 == peAligned {
		r.err = fmt.Errorf("%w: entry at %#x uses an aligned pointer encoding", ErrUnsupported, r.at)
		return at, 0, 0
	}
	le := binary.LittleEndian
	fixed := func(n int) []byte {
		if r.p+uint64(n) > r.end {
			r.fail("truncated pointer")
			return make([]byte, n)
		}
		b := r.data[r.p : r.p+uint64(n)]
		r.p += uint64(n)
		return b
	}
	switch enc & 0x0f {
	case pePtr, peU8, peS8:
		val = le.Uint64(fixed(8))
	case peU4:
		val = uint64(le.Uint32(fixed(4)))
	case peS4:
		val = uint64(int64(int32(le.Uint32(fixed(4)))))
	case peU2:
		val = uint64(le.Uint16(fixed(2)))
	case peS2:
		val = uint64(int64(int16(le.Uint16(fixed(2)))))
	case peULEB:
		val = r.uleb()
	case peSLEB:
		val = uint64(r.sleb())
	default:
		r.fail(fmt.Sprintf("unknown pointer encoding %#x", enc))
	}
	return at, int(r.p - at), val
}

func parseCIE(data []byte, e *ehEntry) error {
	r := &ehReader{data: data, p: e.off + 8, end: e.off + e.size, at: e.off}
	e.version = r.byte()
	if r.err == nil && e.version != 1 && e.version != 3 && e.version != 4 {
		return fmt.Errorf("%w: CIE at %#x has version %d", ErrUnsupported, e.off, e.version)
	}
	e.aug = r.cstring()
	if e.version == 4 {
		r.byte() // address size
		r.byte() // segment selector size
	}
	r.uleb() // code alignment factor
	r.sleb() // data alignment factor
	if e.version == 1 {
		r.byte()
	} else {
		r.uleb()
	}
	e.fdeEnc, e.lsdaEnc, e.persEnc = pePtr, peOmit, peOmit
	if r.err != nil {
		return r.err
	}
	if e.aug == "" {
		return nil
	}
	if e.aug[0] != 'z' {
		return fmt.Errorf("%w: CIE at %#x has augmentation %q", ErrUnsupported, e.off, e.aug)
	}
	n := r.uleb()
	augEnd := r.p + n
	if r.err == nil && augEnd > r.end {
		r.fail("augmentation data runs past the entry")
	}
augmentation:
	for _, c := range e.aug[1:] {
		if r.err != nil {
			break
		}
		switch c {
		case 'P':
			e.persEnc = r.byte()
			at, _, _ := r.pointer(e.persEnc)
			e.persOff = int64(at)
		case 'L':
			e.lsdaEnc = r.byte()
		case 'R':
			e.fdeEnc = r.byte()
		case 'S', 'B', 'G':
			// signal frame, pointer authentication key, memory tagging
		default:
			// Unknown: the rest of the augmentation data is skipped,
			// as the unwinder does.
			r.p = augEnd
			break augmentation
		}
	}
	if r.err == nil && r.p > augEnd {
		r.fail("augmentation data longer than its length")
	}
	return r.err
}

func parseFDE(data []byte, e *ehEntry, cie *ehEntry) error {
	r := &ehReader{data: data, p: e.off + 8, end: e.off + e.size, at: e.off}
	var size int
	e.pcBegin, size, _ = r.pointer(cie.fdeEnc)
	e.pcSize = size
	_, _, e.pcRange = r.pointer(cie.fdeEnc & 0x0f)
	if strings.HasPrefix(cie.aug, "z") {
		n := r.uleb()
		augEnd := r.p + n
		if cie.lsdaEnc != peOmit && n > 0 {
			at, _, _ := r.pointer(cie.lsdaEnc)
			e.lsdaOff = int64(at)
		}
		if r.err == nil && (r.p > augEnd || augEnd > r.end) {
			r.fail("augmentation data longer than its length")
		}
	}
	return r.err
}

// ehTable is the .eh_frame of one patched object.
type ehTable struct {
	sec     *section
	entries []ehEntry
	cie     map[uint64]*ehEntry // by offset
	done    []bool              // FDEs copied or found unusable
}

// ehFrameOut is the patch's .eh_frame as it is being made.
type ehFrameOut struct {
	tables []*ehTable
	typ    elf.SectionType
	data   []byte
	relocs []outReloc
	cies   map[string]uint64 // CIE contents and relocations -> offset
}

// loadEHFrames parses the .eh_frame of every patched object.
func (e *emitter) loadEHFrames() error {
	e.eh = &ehFrameOut{cies: map[string]uint64{}}
	for _, u := range e.units {
		for _, sec := range u.patched.secs {
			if sec == nil || sec.name != ".eh_frame" || len(sec.data) == 0 {
				continue
			}
			entries, err := parseEHFrame(sec.data)
			if err != nil {
				return fmt.Errorf("%s: %w", u.patched.path, err)
			}
			t := &ehTable{sec: sec, entries: entries, cie: map[uint64]*ehEntry{}, done: make([]bool, len(entries))}
			for i := range entries {
				if entries[i].cie {
					t.cie[entries[i].off] = &entries[i]
				}
			}
			if e.eh.typ == 0 {
				e.eh.typ = sec.typ
			}
			e.eh.tables = append(e.eh.tables, t)
		}
	}
	return nil
}

// relocsIn returns the relocations of [lo, hi), which loadObject sorted.
func (t *ehTable) relocsIn(lo, hi uint64) []reloc {
	rs := t.sec.relocs
	i := sort.Search(len(rs), func(i int) bool { return rs[i].off >= lo })
	j := i
	for j < len(rs) && rs[j].off < hi {
		j++
	}
	return rs[i:j]
}

// reloc is the relocation at off, nil if there is none.
func (t *ehTable) reloc(off uint64) *reloc {
	rs := t.relocsIn(off, off+1)
	for i := range rs {
		if rs[i].typ != 0 { // R_*_NONE
			return &rs[i]
		}
	}
	return nil
}

// copyUnwind copies the FDEs of the code included so far; it returns how
// many it copied. Copying may include more sections (LSDAs, the data that
// names the personality routine and the types of catch clauses).
func (e *emitter) copyUnwind() (int, error) {
	n := 0
	for _, t := range e.eh.tables {
		for i := range t.entries {
			fde := &t.entries[i]
			if fde.cie || t.done[i] {
				continue
			}
			r := t.reloc(fde.pcBegin)
			if r == nil || r.sym.sec == nil {
				t.done[i] = true // an address no relocation places: nothing of the patch
				continue
			}
			if e.incl[r.sym.sec] == nil {
				continue // not (yet) in the patch
			}
			t.done[i] = true
			if err := e.copyFDE(t, fde); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// entryRelocs maps the relocations inside one entry to the patch's
// symbols, with offsets relative to the entry.
func (e *emitter) entryRelocs(t *ehTable, ent *ehEntry) ([]outReloc, error) {
	var out []outReloc
	for _, r := range t.relocsIn(ent.off, ent.off+ent.size) {
		if r.typ == 0 { // R_*_NONE
			continue
		}
		if !ent.cie && r.off < ent.ptrOff+4 {
			return nil, fmt.Errorf("%w: %s: relocation in the header of the FDE at %#x", errEHFrame, t.sec.obj.path, ent.off)
		}
		var sym *outSym
		var addend int64
		if !ent.cie && r.off == ent.pcBegin {
			// The code is in the patch (copyUnwind checked).
			if sym = e.symMap[r.sym]; sym != nil {
				addend = r.addend
			} else {
				sym, addend = e.incl[r.sym.sec].secSym, r.addend+int64(r.sym.value)
			}
		} else {
			var err error
			if sym, addend, err = e.resolve(t.sec, r); err != nil {
				return nil, err
			}
			if sym == nil {
				continue // refused; the refusal stops the build
			}
		}
		out = append(out, outReloc{off: r.off - ent.off, typ: r.typ, sym: sym, addend: addend})
	}
	return out, nil
}

// copyCIE copies a CIE unless an identical one (same bytes, relocations
// against the same symbols) is already there, and returns its offset.
func (e *emitter) copyCIE(t *ehTable, cie *ehEntry) (uint64, error) {
	relocs, err := e.entryRelocs(t, cie)
	if err != nil {
		return 0, err
	}
	body := t.sec.data[cie.off : cie.off+cie.size]
	var key strings.Builder
	key.Write(body)
	for _, r := range relocs {
		fmt.Fprintf(&key, "|%d:%d:%p:%d", r.off, r.typ, r.sym, r.addend)
	}
	if off, ok := e.eh.cies[key.String()]; ok {
		return off, nil
	}
	off := e.eh.append(body, relocs)
	e.eh.cies[key.String()] = off
	return off, nil
}

func (e *emitter) copyFDE(t *ehTable, fde *ehEntry) error {
	cie := t.cie[fde.cieOff]
	if cie == nil {
		return fmt.Errorf("%w: %s: FDE at %#x without its CIE", errEHFrame, t.sec.obj.path, fde.off)
	}
	cieOff, err := e.copyCIE(t, cie)
	if err != nil {
		return err
	}
	relocs, err := e.entryRelocs(t, fde)
	if err != nil {
		return err
	}
	body := append([]byte(nil), t.sec.data[fde.off:fde.off+fde.size]...)
	at := uint64(len(e.eh.data))
	ptr := fde.ptrOff - fde.off
	binary.LittleEndian.PutUint32(body[ptr:], uint32(at+ptr-cieOff))
	e.eh.append(body, relocs)
	return nil
}

func (o *ehFrameOut) append(body []byte, relocs []outReloc) uint64 {
	at := uint64(len(o.data))
	o.data = append(o.data, body...)
	for _, r := range relocs {
		r.off += at
		o.relocs = append(o.relocs, r)
	}
	return at
}

// finishUnwind adds the patch's .eh_frame to the output, unless it is
// empty. The engine ends it with the zero terminator when it loads it.
func (e *emitter) finishUnwind() {
	if e.eh == nil || len(e.eh.data) == 0 {
		return
	}
	typ := e.eh.typ
	if typ == 0 {
		typ = elf.SHT_PROGBITS
	}
	os := &outSection{name: ".eh_frame", typ: typ, flags: elf.SHF_ALLOC, align: 8, size: uint64(len(e.eh.data)),
		data: e.eh.data, relocs: e.eh.relocs}
	e.out.addSection(os)
}

// isDWRef reports the compiler's indirection cells DW.ref.NAME (hidden,
// one per linked object), which hold the address of a personality routine
// or of a catch clause's type_info.
func isDWRef(s *symbol) bool { return strings.HasPrefix(s.name, "DW.ref.") }

// dwRef is the patch's own copy of a DW.ref cell, one for all objects.
func (e *emitter) dwRef(t *symbol) *outSym {
	if o := e.dwRefs[t.name]; o != nil {
		return o
	}
	e.include(t.sec)
	o := e.mapped(t)
	e.dwRefs[t.name] = o
	return o
}

// lsdaRef is where an FDE's LSDA pointer points.
type lsdaRef struct {
	sec *section
	off int64
}

// lsdas maps each code section of the object to the LSDAs of the FDEs
// that cover it, in table order. An .eh_frame the parser does not accept
// gives none; the emitter reports it if the patch needs it.
func (o *object) lsdas() map[*section][]lsdaRef {
	if o.lsda != nil {
		return o.lsda
	}
	o.lsda = map[*section][]lsdaRef{}
	for _, sec := range o.secs {
		if sec == nil || sec.name != ".eh_frame" || len(sec.data) == 0 {
			continue
		}
		entries, err := parseEHFrame(sec.data)
		if err != nil {
			continue
		}
		t := &ehTable{sec: sec}
		for _, e := range entries {
			if e.cie || e.lsdaOff < 0 {
				continue
			}
			pc, l := t.reloc(e.pcBegin), t.reloc(uint64(e.lsdaOff))
			if pc == nil || pc.sym.sec == nil || l == nil || l.sym.sec == nil {
				continue
			}
			ref := lsdaRef{sec: l.sym.sec, off: l.addend}
			if l.sym.typ != elf.STT_SECTION {
				ref.off += int64(l.sym.value)
			}
			o.lsda[pc.sym.sec] = append(o.lsda[pc.sym.sec], ref)
		}
	}
	return o.lsda
}

// lsdaEqual compares the exception tables of two versions of a function:
// a changed catch clause may leave the code as it was and change only the
// types its LSDA names.
func (u *unit) lsdaEqual(p, o *section) bool {
	pl, ol := u.patched.lsdas()[p], u.orig.lsdas()[o]
	if len(pl) != len(ol) {
		return false
	}
	for i := range pl {
		if pl[i].off != ol[i].off || !u.sectionEqual(pl[i].sec, ol[i].sec) {
			return false
		}
	}
	return true
}
