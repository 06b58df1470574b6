package arch

import (
	"debug/elf"
	"errors"
	"fmt"
)

var (
	// ErrUnsupportedReloc means a relocation type hotpatch cannot apply.
	ErrUnsupportedReloc = errors.New("unsupported relocation")
	// ErrOutOfRange means a relocated value does not fit its field.
	ErrOutOfRange = errors.New("relocation out of range")
	// ErrNotSupported means the architecture is not supported.
	ErrNotSupported = errors.New("architecture not supported")
)

// RelocError names the relocation that failed.
type RelocError struct {
	Type    string
	Symbol  string
	Section string
	Offset  uint64
	Err     error
}

func (e *RelocError) Error() string {
	return fmt.Sprintf("%s against %s at %s+%#x: %v", e.Type, e.Symbol, e.Section, e.Offset, e.Err)
}

func (e *RelocError) Unwrap() error { return e.Err }

// Need says what a relocation needs from the linker besides the symbol.
type Need int

const (
	NeedNothing  Need = iota
	NeedGOT           // a GOT slot holding S
	NeedPLT           // a call stub when S may be out of direct reach
	NeedTPOff         // S is a TLS variable; the value uses its TP offset
	NeedGOTTPOff      // a GOT slot holding S's TP offset
	NeedGOTBase       // the address of the patch GOT
	// NeedNear means the field holds S-P in 32 bits: S must lie within the
	// patch's reach, which holds for the base image but not for imports.
	NeedNear
)

// RelocInfo describes one supported relocation type.
type RelocInfo struct {
	Name string
	Need Need
	// Absolute32 means the patch must be mapped where a 32-bit absolute
	// address reaches it (non-PIC code for a non-PIE executable).
	Absolute32 bool
	// Signed32 is like Absolute32 for sign-extended fields (below 2 GiB).
	Signed32 bool
}

// Reloc is one relocation to apply, with every address already resolved.
type Reloc struct {
	Type   uint32
	Data   []byte // the section's bytes
	Offset uint64 // offset of the relocated field inside Data
	P      uint64 // address of the relocated field
	S      uint64 // symbol address
	A      int64  // addend
	G      uint64 // address of the GOT slot, when one was requested
	L      uint64 // address of the call stub, when one was made
	GOT    uint64 // address of the patch GOT
	TPOff  int64  // TP-relative offset of a TLS symbol
	Size   uint64 // symbol size (for SIZE relocations)
}

// Arch is everything architecture-specific the engine and linker use.
type Arch struct {
	Name    string
	Machine elf.Machine
	PtrSize int

	SyscallInsn []byte
	// InsnAlign is the alignment of every instruction (0 or 1: none).
	InsnAlign                       int
	SysMmap, SysMunmap, SysMprotect uint64
	SysPrctl                        uint64
	// SysGetpid is the call stubs' marker; SysRtSigreturn the return
	// through a signal frame (landing frames, the arm64 call stub), which
	// also reads the thread's mask with SysRtSigprocmask.
	SysGetpid, SysRtSigreturn, SysRtSigprocmask uint64
	// AuditArch identifies the architecture to seccomp filters
	// (AUDIT_ARCH_*).
	AuditArch uint32

	// JumpReach is how far the short jump reaches in either direction.
	JumpReach int64
	// ShortJumpLen and LongJumpLen are the byte lengths of the two jumps.
	ShortJumpLen, LongJumpLen int
	// StubLen is the length of a call stub made by EncodeStub.
	StubLen int

	Relocs map[uint32]RelocInfo
	// Apply writes one relocation into r.Data.
	Apply func(r *Reloc) error
	// EncodeShortJump encodes a jump at from to to; ok is false when out of reach.
	EncodeShortJump func(from, to uint64) (code []byte, ok bool)
	// EncodeLongJump encodes an absolute jump to to, reachable from anywhere.
	EncodeLongJump func(from, to uint64) []byte
	// EncodeStub encodes, at from, a jump through the pointer stored at slot.
	EncodeStub func(from, slot uint64) ([]byte, error)

	// GateCheckLen is the length of EncodeGateCheck's output.
	GateCheckLen int
	// EncodeGateCheck encodes, at at, a branch to target taken when the
	// byte at gate is non-zero.
	EncodeGateCheck func(at, gate, target uint64) ([]byte, error)
	// Displace relocates the first instructions of a function, which an
	// n-byte jump overwrites, to run at to.
	Displace func(code []byte, addr uint64, n int, to uint64) (out []byte, covered int, fallsThrough bool, err error)
	// BranchesInto reports whether code at addr branches into (lo, hi).
	BranchesInto func(code []byte, addr, lo, hi uint64) bool
	// MaxStubLen bounds a gated stub: check, moved code, jump back.
	MaxStubLen int

	// FarReach is how far patch memory may lie from the target image and
	// still reach its code and data with the patch's PC-relative forms.
	// Where no hole lies within JumpReach, patch memory goes within
	// FarReach and the sites take the long jump. Zero means JumpReach.
	FarReach int64
	// CallReach is the reach of a direct call or branch relocation. Where
	// it is shorter than FarReach, every call out of the patch gets a stub
	// through the GOT, used when the target turns out to be out of reach.
	// Zero means FarReach.
	CallReach int64
	// KeepEntry returns how many bytes at a function's entry stay in place
	// (an indirect-branch landing pad the jump must not replace), and the
	// code to run before entering the new function instead, undoing what
	// those bytes did. Nil keeps nothing.
	KeepEntry func(code []byte) (keep int, undo []byte)
	// BackJumpShort means a stub returns into the old function only with
	// the short jump: an indirect branch would need a landing pad there.
	BackJumpShort bool
	// TLSBlockOffset is the offset from the thread pointer to the main
	// executable's TLS block, given its PT_TLS, as the C library lays it out.
	TLSBlockOffset func(vaddr, memsz, align uint64) int64
	// TLSCall is the helper a general- or local-dynamic TLS sequence calls,
	// and TLSSequence says how many bytes after a relocated field the
	// rewrite to local-exec consumes, so the linker drops the relocations
	// inside them (the call's, among them).
	TLSCall     string
	TLSSequence func(typ uint32) uint64
}

// Reach returns FarReach, or JumpReach when FarReach is not set.
func (a *Arch) Reach() int64 {
	if a.FarReach > 0 {
		return a.FarReach
	}
	return a.JumpReach
}

// ForMachine returns the Arch for an ELF machine.
func ForMachine(m elf.Machine) (*Arch, error) {
	switch m {
	case elf.EM_X86_64:
		return AMD64, nil
	case elf.EM_AARCH64:
		return ARM64, nil
	}
	return nil, fmt.Errorf("%v: %w", m, ErrNotSupported)
}

// ForName returns the Arch by Go architecture name.
func ForName(name string) (*Arch, error) {
	switch name {
	case "amd64":
		return AMD64, nil
	case "arm64":
		return ARM64, nil
	}
	return nil, fmt.Errorf("%s: %w", name, ErrNotSupported)
}

// EncodeJump chooses the short jump when it reaches and fits in room, else
// the long one when it fits.
func (a *Arch) EncodeJump(from, to uint64, room uint64) ([]byte, error) {
	if code, ok := a.EncodeShortJump(from, to); ok && uint64(len(code)) <= room {
		return code, nil
	}
	code := a.EncodeLongJump(from, to)
	if uint64(len(code)) > room {
		if _, ok := a.EncodeShortJump(from, to); ok {
			return nil, fmt.Errorf("function has %d bytes before the next symbol, a jump needs %d", room, a.ShortJumpLen)
		}
		return nil, fmt.Errorf("function has %d bytes before the next symbol, a jump to %#x needs %d", room, to, len(code))
	}
	return code, nil
}

func fitsInt32(v int64) bool { return v >= -1<<31 && v < 1<<31 }
