package consistency

import (
	"github.com/go-delve/delve/pkg/dwarf/frame"

	"github.com/hotpatch/hotpatch/internal/leb128"
)

// cfaInfo summarizes a CFA instruction stream. The frame package maps
// DW_CFA_restore to "undefined" (it never records the CIE's initial rules)
// and does not scale DW_CFA_val_offset; knowing which opcodes a stream
// contains lets us correct the first and refuse the second instead of
// mistaking a restored return address for the end of the stack.
type cfaInfo struct {
	undefined uint64 // registers named by DW_CFA_undefined (bit n = reg n, n < 64)
	restored  uint64 // registers named by DW_CFA_restore(_extended)
	bigUndef  bool   // DW_CFA_undefined for a register >= 64
	bigRest   bool   // DW_CFA_restore for a register >= 64
	valOffset bool   // contains DW_CFA_val_offset (unsigned form)
	bad       bool   // could not be decoded
}

func (c *cfaInfo) merge(o cfaInfo) {
	c.undefined |= o.undefined
	c.restored |= o.restored
	c.bigUndef = c.bigUndef || o.bigUndef
	c.bigRest = c.bigRest || o.bigRest
	c.valOffset = c.valOffset || o.valOffset
	c.bad = c.bad || o.bad
}

func (c *cfaInfo) hasUndefined(reg uint64) bool {
	if reg >= 64 {
		return c.bigUndef
	}
	return c.undefined&(1<<reg) != 0
}

func (c *cfaInfo) hasRestore(reg uint64) bool {
	if reg >= 64 {
		return c.bigRest
	}
	return c.restored&(1<<reg) != 0
}

// scanCFA decodes a CFA program the way the frame package does, without
// executing it.
func scanCFA(b []byte) (info cfaInfo) {
	mark := func(set *uint64, big *bool, reg uint64) {
		if reg >= 64 {
			*big = true
			return
		}
		*set |= 1 << reg
	}
	i := 0
	uleb := func() uint64 {
		v, n, ok := leb128.Unsigned(b[i:])
		i += n
		if !ok {
			info.bad = true
		}
		return v
	}
	skip := func(n int) {
		if i+n > len(b) {
			info.bad = true
			i = len(b)
			return
		}
		i += n
	}
	for i < len(b) && !info.bad {
		op := b[i]
		i++
		switch op & 0xc0 {
		case 0x40: // advance_loc
			continue
		case 0x80: // offset
			uleb()
			continue
		case 0xc0: // restore
			mark(&info.restored, &info.bigRest, uint64(op&0x3f))
			continue
		}
		switch op {
		case 0x00, 0x0a, 0x0b: // nop, remember_state, restore_state
		case 0x01: // set_loc: the frame package reads a 64-bit address
			skip(8)
		case 0x02:
			skip(1)
		case 0x03:
			skip(2)
		case 0x04:
			skip(4)
		case 0x05, 0x09, 0x0c, 0x11, 0x12, 0x15: // two LEB operands
			uleb()
			uleb()
		case 0x14: // val_offset
			info.valOffset = true
			uleb()
			uleb()
		case 0x06: // restore_extended
			mark(&info.restored, &info.bigRest, uleb())
		case 0x07: // undefined
			mark(&info.undefined, &info.bigUndef, uleb())
		case 0x08, 0x0d, 0x0e, 0x13, 0x2e: // one LEB operand
			uleb()
		case 0x0f: // def_cfa_expression
			skip(int(min(uleb(), uint64(len(b)+1))))
		case 0x10, 0x16: // expression, val_expression
			uleb()
			skip(int(min(uleb(), uint64(len(b)+1))))
		case 0x1c, 0x3f: // lo_user, hi_user: the frame package skips one byte
			skip(1)
		default:
			info.bad = true
		}
	}
	return info
}

// hideNegateRAState turns every DW_CFA_AARCH64_negate_ra_state (0x2d, the
// opcode DW_CFA_GNU_window_save has elsewhere) into DW_CFA_nop in place. It
// only says whether the saved return address is signed, which the walker
// handles by clearing Arch.PACMask from every return address; the frame
// package would otherwise stop at the unknown opcode, and every frame of a
// function built with -mbranch-protection would fall back to the scan.
func hideNegateRAState(fdes frame.FrameDescriptionEntries) {
	seen := map[*frame.CommonInformationEntry]bool{}
	for _, f := range fdes {
		hideOp(f.Instructions, 0x2d)
		if f.CIE != nil && !seen[f.CIE] {
			seen[f.CIE] = true
			hideOp(f.CIE.InitialInstructions, 0x2d)
		}
	}
}

// hideOp replaces the operand-less opcode op by DW_CFA_nop wherever it
// stands as an opcode of the CFA program b, decoded as scanCFA decodes it.
func hideOp(b []byte, op byte) {
	i := 0
	uleb := func() uint64 {
		v, n, _ := leb128.Unsigned(b[i:])
		i += n
		return v
	}
	skip := func(n uint64) { i = int(min(uint64(i)+n, uint64(len(b)))) }
	for i < len(b) {
		o := b[i]
		i++
		switch o & 0xc0 {
		case 0x40, 0xc0:
			continue
		case 0x80:
			uleb()
			continue
		}
		switch o {
		case op:
			b[i-1] = 0x00
		case 0x01:
			skip(8)
		case 0x02:
			skip(1)
		case 0x03:
			skip(2)
		case 0x04:
			skip(4)
		case 0x05, 0x09, 0x0c, 0x11, 0x12, 0x14, 0x15:
			uleb()
			uleb()
		case 0x06, 0x07, 0x08, 0x0d, 0x0e, 0x13, 0x2e:
			uleb()
		case 0x0f:
			skip(uleb())
		case 0x10, 0x16:
			uleb()
			skip(uleb())
		case 0x1c, 0x3f:
			skip(1)
		case 0x00, 0x0a, 0x0b:
		default:
			return // undecodable: leave the rest for scanCFA to refuse
		}
	}
}
