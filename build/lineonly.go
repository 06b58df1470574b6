package build

import (
	"bytes"

	"golang.org/x/arch/x86/x86asm"
)

// splitLineOnly moves the changed functions whose only difference is in
// line numbers (__LINE__, as in assert) out of u.changed. A difference is
// a line number when it is an immediate operand that, in every file the
// fix changes, maps from an unchanged old line to the same line after the
// fix. Such functions behave the same, apart from the message they print,
// so the patch leaves them alone and the report names them.
func (b *builder) splitLineOnly(u *unit) {
	var maps []func(int) int
	for _, f := range b.diff.Files {
		if !f.New && !f.Deleted {
			maps = append(maps, f.LineMap())
		}
	}
	var keep []*symbol
	for _, p := range u.changed {
		if u.lineShiftOnly(p, u.corr[p], maps) {
			u.lineOnly = append(u.lineOnly, p)
		} else {
			keep = append(keep, p)
		}
	}
	u.changed = keep
}

func (u *unit) lineShiftOnly(p, o *symbol, maps []func(int) int) bool {
	ps, os := p.sec, o.sec
	if ps.size != os.size || len(ps.relocs) != len(os.relocs) || bytes.Equal(ps.data, os.data) {
		return false
	}
	for i := range ps.relocs {
		if !u.relocEqual(ps.relocs[i], os.relocs[i], ps, os) {
			return false
		}
	}
	lineMoved := func(a, b int64) bool {
		for _, m := range maps {
			if a > 0 && a < 1<<24 && int64(m(int(a))) == b {
				return true
			}
		}
		return false
	}
	for off := 0; off < len(ps.data); {
		pi, err1 := x86asm.Decode(ps.data[off:], 64)
		oi, err2 := x86asm.Decode(os.data[off:], 64)
		if err1 != nil || err2 != nil || pi.Len != oi.Len {
			return false
		}
		if !bytes.Equal(ps.data[off:off+pi.Len], os.data[off:off+oi.Len]) {
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
				if !ok1 || !ok2 || !lineMoved(int64(ai), int64(bi)) {
					return false
				}
			}
		}
		off += pi.Len
	}
	return true
}
