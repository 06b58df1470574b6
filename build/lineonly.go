package build

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// splitLineOnly moves the changed functions whose only difference is in
// line numbers (__LINE__, as in assert) out of u.changed. A difference is
// a line number when it is an immediate operand a -> b such that the
// original function has code on line a of a file the fix changes, line a
// is unchanged and moves to b, and the fixed function has code on line b.
// None of the function's code (inlined code included) may come from a line
// the fix removes or adds: an off-by-one fix (cmp $15 -> cmp $16) below a
// new line would otherwise look like a moved line. Such functions behave
// the same, apart from the message they print, so the patch leaves them
// alone and the report names them.
func (b *builder) splitLineOnly(u *unit) {
	if len(u.changed) == 0 {
		return
	}
	files := map[string]*lineFile{}
	seen := map[string]bool{}
	for _, f := range b.diff.Files {
		if seen[filepath.Clean(f.Path)] {
			return // a series changing a file twice: its line maps would need composing
		}
		seen[filepath.Clean(f.Path)] = true
		if !f.New && !f.Deleted {
			lf := &lineFile{m: f.LineMap()}
			lf.removed, lf.added = f.ChangedLines()
			files[filepath.Clean(f.Path)] = lf
		}
	}
	orows, err1 := u.orig.lineRows()
	prows, err2 := u.patched.lineRows()
	if err1 != nil || err2 != nil {
		return // without line tables nothing is taken for a line shift
	}
	var keep []*symbol
	for _, p := range u.changed {
		o := u.corr[p]
		ol, pl := b.sourceLines(orows[o.sec], files), b.sourceLines(prows[p.sec], files)
		if u.lineShiftOnly(p, o, files, ol, pl) {
			u.lineOnly = append(u.lineOnly, p)
		} else {
			keep = append(keep, p)
		}
	}
	u.changed = keep
}

type lineFile struct {
	m              func(int) int
	removed, added map[int]bool
}

// sourceLines turns the line table's file names into paths relative to
// the tree, as the diff names them. A name outside the tree (a build with
// -ffile-prefix-map) is matched by its end.
func (b *builder) sourceLines(rows map[string]map[int]bool, files map[string]*lineFile) map[string]map[int]bool {
	out := map[string]map[int]bool{}
	for f, lines := range rows {
		rel := filepath.Clean(relTo(b.tree, f))
		if _, ok := files[rel]; !ok {
			best := ""
			for d := range files {
				if strings.HasSuffix(rel, string(filepath.Separator)+d) && len(d) > len(best) {
					best = d
				}
			}
			if best != "" {
				rel = best
			}
		}
		if out[rel] == nil {
			out[rel] = map[int]bool{}
		}
		for l := range lines {
			out[rel][l] = true
		}
	}
	return out
}

func (u *unit) lineShiftOnly(p, o *symbol, files map[string]*lineFile, orows, prows map[string]map[int]bool) bool {
	ps, os := p.sec, o.sec
	if ps.size != os.size || len(ps.relocs) != len(os.relocs) || bytes.Equal(ps.data, os.data) {
		return false
	}
	for i := range ps.relocs {
		if !u.relocEqual(ps.relocs[i], os.relocs[i], ps, os) {
			return false
		}
	}
	for f, lf := range files {
		for l := range orows[f] {
			if lf.removed[l] {
				return false
			}
		}
		for l := range prows[f] {
			if lf.added[l] {
				return false
			}
		}
	}
	lineMoved := func(a, b int64) bool {
		if a <= 0 || a >= 1<<24 {
			return false
		}
		for f, lf := range files {
			if orows[f][int(a)] && prows[f][int(b)] && int64(lf.m(int(a))) == b {
				return true
			}
		}
		return false
	}
	return u.orig.mach.lineShift(ps.data, os.data, lineMoved)
}

// lineShiftAMD64 decodes both functions instruction by instruction: a
// difference must be in immediate operands only, each a moved line.
func lineShiftAMD64(p, o []byte, moved func(a, b int64) bool) bool {
	for off := 0; off < len(p); {
		pi, err1 := x86asm.Decode(p[off:], 64)
		oi, err2 := x86asm.Decode(o[off:], 64)
		if err1 != nil || err2 != nil || pi.Len != oi.Len {
			return false
		}
		if !bytes.Equal(p[off:off+pi.Len], o[off:off+oi.Len]) {
			if pi.Op != oi.Op {
				return false
			}
			for k := range pi.Args {
				a, b := oi.Args[k], pi.Args[k]
				if a == b {
					continue
				}
				ai, ok1 := a.(x86asm.Imm)
				bi, ok2 := b.(x86asm.Imm)
				if !ok1 || !ok2 || !moved(int64(ai), int64(bi)) {
					return false
				}
			}
		}
		off += pi.Len
	}
	return true
}

// lineRows returns, for each code section, the source lines its line
// table attributes code to, by file name. In an object every section's
// addresses start at 0, so the line table is read from a copy in which the
// symbols of code sections carry their section index in the high bits.
func (o *object) lineRows() (map[*section]map[string]map[int]bool, error) {
	data, err := os.ReadFile(o.path)
	if err != nil {
		return nil, err
	}
	var symtab *elf.Section
	for _, s := range o.raw.Sections {
		if s.Type == elf.SHT_SYMTAB {
			symtab = s
		}
	}
	if symtab == nil || symtab.Offset+symtab.Size > uint64(len(data)) {
		return nil, errors.New("no symbol table")
	}
	for off := symtab.Offset; off+24 <= symtab.Offset+symtab.Size; off += 24 {
		shndx := int(binary.LittleEndian.Uint16(data[off+6:]))
		if shndx > 0 && shndx < len(o.secs) && o.secs[shndx].exec() {
			v := binary.LittleEndian.Uint64(data[off+8:])
			binary.LittleEndian.PutUint64(data[off+8:], v|uint64(shndx)<<40)
		}
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	d, err := f.DWARF()
	if err != nil {
		return nil, err
	}
	out := map[*section]map[string]map[int]bool{}
	r := d.Reader()
	for {
		cu, err := r.Next()
		if err != nil {
			return nil, err
		}
		if cu == nil {
			break
		}
		if cu.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
			continue
		}
		lr, err := d.LineReader(cu)
		if err != nil {
			return nil, err
		}
		r.SkipChildren()
		if lr == nil {
			continue
		}
		var e dwarf.LineEntry
		for {
			if err := lr.Next(&e); err != nil {
				if err == io.EOF {
					break
				}
				return nil, err
			}
			idx := int(e.Address >> 40)
			if e.File == nil || e.Line <= 0 || idx <= 0 || idx >= len(o.secs) {
				continue
			}
			sec := o.secs[idx]
			if out[sec] == nil {
				out[sec] = map[string]map[int]bool{}
			}
			if out[sec][e.File.Name] == nil {
				out[sec][e.File.Name] = map[int]bool{}
			}
			out[sec][e.File.Name][e.Line] = true
		}
	}
	return out, nil
}
