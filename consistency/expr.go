package consistency

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hotpatch/hotpatch/internal/leb128"
)

// maxExprSteps bounds a DWARF expression, which may branch backwards.
const maxExprSteps = 1000

var errExpr = errors.New("unsupported DWARF expression")

// evalExpr runs the subset of DWARF expressions found in CFI (signal
// trampolines, PLT stubs): constants, register-relative values, stack
// arithmetic, comparisons, branches and dereferences of stack memory.
// push, when set, is pushed first (the CFA, for register rules). reg
// returns a register of the frame being unwound; deref reads the stack.
func evalExpr(code []byte, push *uint64, reg func(uint64) (uint64, bool), deref func(uint64) (uint64, error)) (uint64, error) {
	var st []uint64
	var small [8]uint64
	st = small[:0]
	if push != nil {
		st = append(st, *push)
	}
	i := 0
	fail := func(what string) (uint64, error) {
		return 0, fmt.Errorf("%w: %s at offset %d", errExpr, what, i)
	}
	uleb := func() (uint64, bool) {
		v, n, ok := leb128.Unsigned(code[i:])
		i += n
		return v, ok
	}
	sleb := func() (int64, bool) {
		v, n, ok := leb128.Signed(code[i:])
		i += n
		return v, ok
	}
	fixed := func(n int) (uint64, bool) {
		if i+n > len(code) {
			return 0, false
		}
		var v uint64
		switch n {
		case 1:
			v = uint64(code[i])
		case 2:
			v = uint64(binary.LittleEndian.Uint16(code[i:]))
		case 4:
			v = uint64(binary.LittleEndian.Uint32(code[i:]))
		case 8:
			v = binary.LittleEndian.Uint64(code[i:])
		}
		i += n
		return v, true
	}
	pop := func() (uint64, bool) {
		if len(st) == 0 {
			return 0, false
		}
		v := st[len(st)-1]
		st = st[:len(st)-1]
		return v, true
	}
	bool2 := func(b bool) uint64 {
		if b {
			return 1
		}
		return 0
	}

	for steps := 0; i < len(code); steps++ {
		if steps >= maxExprSteps || len(st) > 64 {
			return fail("too long")
		}
		op := code[i]
		i++
		switch {
		case op >= 0x30 && op <= 0x4f: // lit0..lit31
			st = append(st, uint64(op-0x30))
			continue
		case op >= 0x70 && op <= 0x8f, op == 0x92: // breg0..breg31, bregx
			n := uint64(op - 0x70)
			if op == 0x92 {
				var ok bool
				if n, ok = uleb(); !ok {
					return fail("truncated")
				}
			}
			off, ok := sleb()
			if !ok {
				return fail("truncated")
			}
			v, known := reg(n)
			if !known {
				return 0, fmt.Errorf("%w: register %d unknown", errExpr, n)
			}
			st = append(st, v+uint64(off))
			continue
		}
		switch op {
		case 0x06, 0x94: // deref, deref_size
			size := uint64(8)
			if op == 0x94 {
				var ok bool
				if size, ok = fixed(1); !ok {
					return fail("truncated")
				}
			}
			a, ok := pop()
			if !ok {
				return fail("stack underflow")
			}
			v, err := deref(a)
			if err != nil {
				return 0, err
			}
			if size < 8 {
				v &= 1<<(8*size) - 1
			} else if size > 8 {
				return fail("bad deref size")
			}
			st = append(st, v)
		case 0x08, 0x0a, 0x0c, 0x0e: // const1u, const2u, const4u, const8u
			v, ok := fixed(1 << ((op - 0x08) / 2))
			if !ok {
				return fail("truncated")
			}
			st = append(st, v)
		case 0x09, 0x0b, 0x0d, 0x0f: // const1s, const2s, const4s, const8s
			n := 1 << ((op - 0x09) / 2)
			v, ok := fixed(n)
			if !ok {
				return fail("truncated")
			}
			shift := 64 - 8*uint(n)
			st = append(st, uint64(int64(v<<shift)>>shift))
		case 0x10: // constu
			v, ok := uleb()
			if !ok {
				return fail("truncated")
			}
			st = append(st, v)
		case 0x11: // consts
			v, ok := sleb()
			if !ok {
				return fail("truncated")
			}
			st = append(st, uint64(v))
		case 0x12: // dup
			if len(st) < 1 {
				return fail("stack underflow")
			}
			st = append(st, st[len(st)-1])
		case 0x13: // drop
			if _, ok := pop(); !ok {
				return fail("stack underflow")
			}
		case 0x14: // over
			if len(st) < 2 {
				return fail("stack underflow")
			}
			st = append(st, st[len(st)-2])
		case 0x15: // pick
			n, ok := fixed(1)
			if !ok || n >= uint64(len(st)) {
				return fail("bad pick")
			}
			st = append(st, st[len(st)-1-int(n)])
		case 0x16: // swap
			if len(st) < 2 {
				return fail("stack underflow")
			}
			st[len(st)-1], st[len(st)-2] = st[len(st)-2], st[len(st)-1]
		case 0x17: // rot
			if len(st) < 3 {
				return fail("stack underflow")
			}
			n := len(st)
			st[n-1], st[n-2], st[n-3] = st[n-2], st[n-3], st[n-1]
		case 0x19, 0x1f, 0x20: // abs, neg, not
			a, ok := pop()
			if !ok {
				return fail("stack underflow")
			}
			switch op {
			case 0x19:
				if int64(a) < 0 {
					a = -a
				}
			case 0x1f:
				a = -a
			case 0x20:
				a = ^a
			}
			st = append(st, a)
		case 0x23: // plus_uconst
			if len(st) < 1 {
				return fail("stack underflow")
			}
			v, ok := uleb()
			if !ok {
				return fail("truncated")
			}
			st[len(st)-1] += v
		case 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
			0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e: // binary operators
			b, ok1 := pop()
			a, ok2 := pop()
			if !ok1 || !ok2 {
				return fail("stack underflow")
			}
			var v uint64
			switch op {
			case 0x1a:
				v = a & b
			case 0x1b:
				if b == 0 {
					return fail("division by zero")
				}
				v = uint64(int64(a) / int64(b))
			case 0x1c:
				v = a - b
			case 0x1d:
				if b == 0 {
					return fail("division by zero")
				}
				v = a % b
			case 0x1e:
				v = a * b
			case 0x21:
				v = a | b
			case 0x22:
				v = a + b
			case 0x24:
				v = a << (b & 63)
			case 0x25:
				v = a >> (b & 63)
			case 0x26:
				v = uint64(int64(a) >> (b & 63))
			case 0x27:
				v = a ^ b
			case 0x29:
				v = bool2(a == b)
			case 0x2a:
				v = bool2(int64(a) >= int64(b))
			case 0x2b:
				v = bool2(int64(a) > int64(b))
			case 0x2c:
				v = bool2(int64(a) <= int64(b))
			case 0x2d:
				v = bool2(int64(a) < int64(b))
			case 0x2e:
				v = bool2(a != b)
			}
			st = append(st, v)
		case 0x28, 0x2f: // bra, skip
			d, ok := fixed(2)
			if !ok {
				return fail("truncated")
			}
			take := true
			if op == 0x28 {
				c, ok := pop()
				if !ok {
					return fail("stack underflow")
				}
				take = c != 0
			}
			if take {
				to := i + int(int16(d))
				if to < 0 || to > len(code) {
					return fail("branch out of range")
				}
				i = to
			}
		case 0x96: // nop
		default:
			return fail(fmt.Sprintf("opcode %#x", op))
		}
	}
	if len(st) == 0 {
		return fail("empty result")
	}
	return st[len(st)-1], nil
}
