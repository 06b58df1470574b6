package arch

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// AMD64 is the x86-64 description.
var AMD64 = &Arch{
	Name:             "amd64",
	Machine:          elf.EM_X86_64,
	PtrSize:          8,
	SyscallInsn:      []byte{0x0f, 0x05},
	SysMmap:          9,
	SysMprotect:      10,
	SysMunmap:        11,
	SysPrctl:         157,
	SysGetpid:        39,
	SysRtSigreturn:   15,
	SysRtSigprocmask: 14,
	AuditArch:        0xc000003e, // AUDIT_ARCH_X86_64
	JumpReach:        1<<31 - 1,
	ShortJumpLen:     5,
	LongJumpLen:      14,
	StubLen:          8,
	Relocs: map[uint32]RelocInfo{
		uint32(elf.R_X86_64_NONE):          {Name: "R_X86_64_NONE"},
		uint32(elf.R_X86_64_64):            {Name: "R_X86_64_64"},
		uint32(elf.R_X86_64_PC32):          {Name: "R_X86_64_PC32", Need: NeedNear},
		uint32(elf.R_X86_64_PLT32):         {Name: "R_X86_64_PLT32", Need: NeedPLT},
		uint32(elf.R_X86_64_GOTPCREL):      {Name: "R_X86_64_GOTPCREL", Need: NeedGOT},
		uint32(elf.R_X86_64_GOTPCRELX):     {Name: "R_X86_64_GOTPCRELX", Need: NeedGOT},
		uint32(elf.R_X86_64_REX_GOTPCRELX): {Name: "R_X86_64_REX_GOTPCRELX", Need: NeedGOT},
		uint32(elf.R_X86_64_32):            {Name: "R_X86_64_32", Absolute32: true},
		uint32(elf.R_X86_64_32S):           {Name: "R_X86_64_32S", Signed32: true},
		uint32(elf.R_X86_64_PC64):          {Name: "R_X86_64_PC64"},
		uint32(elf.R_X86_64_GOTOFF64):      {Name: "R_X86_64_GOTOFF64", Need: NeedGOTBase},
		uint32(elf.R_X86_64_GOTPC32):       {Name: "R_X86_64_GOTPC32", Need: NeedGOTBase},
		uint32(elf.R_X86_64_GOTPC64):       {Name: "R_X86_64_GOTPC64", Need: NeedGOTBase},
		uint32(elf.R_X86_64_SIZE32):        {Name: "R_X86_64_SIZE32"},
		uint32(elf.R_X86_64_SIZE64):        {Name: "R_X86_64_SIZE64"},
		uint32(elf.R_X86_64_TLSGD):         {Name: "R_X86_64_TLSGD", Need: NeedTPOff},
		uint32(elf.R_X86_64_TLSLD):         {Name: "R_X86_64_TLSLD", Need: NeedTPOff},
		uint32(elf.R_X86_64_DTPOFF32):      {Name: "R_X86_64_DTPOFF32", Need: NeedTPOff},
		uint32(elf.R_X86_64_DTPOFF64):      {Name: "R_X86_64_DTPOFF64", Need: NeedTPOff},
		uint32(elf.R_X86_64_GOTTPOFF):      {Name: "R_X86_64_GOTTPOFF", Need: NeedGOTTPOff},
		uint32(elf.R_X86_64_TPOFF32):       {Name: "R_X86_64_TPOFF32", Need: NeedTPOff},
		uint32(elf.R_X86_64_TPOFF64):       {Name: "R_X86_64_TPOFF64", Need: NeedTPOff},
	},
	Apply:           amd64Apply,
	EncodeShortJump: amd64ShortJump,
	EncodeLongJump:  amd64LongJump,
	EncodeStub:      amd64Stub,
	GateCheckLen:    13,
	EncodeGateCheck: amd64GateCheck,
	Displace:        amd64Displace,
	BranchesInto:    amd64BranchesInto,
	KeepEntry:       amd64KeepEntry,
	// 13-byte check, up to 14+14 bytes of instructions (each may grow by 4
	// when a short branch is widened), a 14-byte way back: rounded up.
	MaxStubLen:     80,
	TLSBlockOffset: amd64TLSBlockOffset,
	TLSCall:        TLSCallSymbol,
	TLSSequence:    TLSSequenceLen,
}

// amd64TLSBlockOffset places the executable's block right below the thread
// pointer (TLS variant II), as glibc does.
func amd64TLSBlockOffset(vaddr, memsz, align uint64) int64 {
	align = max(align, 1)
	firstbyte := (-(vaddr & (align - 1))) & (align - 1)
	off := (memsz-firstbyte+align-1)/align*align + firstbyte
	return -int64(off)
}

// TLSCallSymbol is the helper a general- or local-dynamic TLS sequence calls.
// The linker rewrites those sequences to local-exec form, so the call and
// its relocation are consumed by the TLSGD/TLSLD relocation before it.
const TLSCallSymbol = "__tls_get_addr"

func amd64ShortJump(from, to uint64) ([]byte, bool) {
	rel := int64(to) - int64(from+5)
	if !fitsInt32(rel) {
		return nil, false
	}
	code := []byte{0xe9, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(code[1:], uint32(int32(rel)))
	return code, true
}

// endbr64 marks where an indirect branch may land when the CPU enforces
// indirect branch tracking (CET IBT, -fcf-protection).
var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// amd64KeepEntry keeps an endbr64 at the entry: an indirect call must still
// land on it, so the jump goes after it. The new function is entered by a
// direct jump, which needs no landing pad.
func amd64KeepEntry(code []byte) (int, []byte) {
	if bytes.HasPrefix(code, endbr64) {
		return len(endbr64), nil
	}
	return 0, nil
}

// amd64LongJump is jmp *0(%rip) followed by the 8-byte target.
func amd64LongJump(_, to uint64) []byte {
	code := []byte{0xff, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint64(code[6:], to)
	return code
}

// amd64Stub is jmp *slot(%rip), padded with int3 to StubLen.
func amd64Stub(from, slot uint64) ([]byte, error) {
	rel := int64(slot) - int64(from+6)
	if !fitsInt32(rel) {
		return nil, fmt.Errorf("GOT slot %#x out of reach of stub at %#x: %w", slot, from, ErrOutOfRange)
	}
	code := []byte{0xff, 0x25, 0, 0, 0, 0, 0xcc, 0xcc}
	binary.LittleEndian.PutUint32(code[2:], uint32(int32(rel)))
	return code, nil
}

// The general-dynamic sequence gcc emits for x86-64 (16 bytes):
//
//	66 48 8d 3d <tlsgd>   data16 lea x@tlsgd(%rip),%rdi
//	66 66 48 e8 <plt32>   data16 data16 rex.W call __tls_get_addr@PLT
//
// and its local-exec rewrite, valid because the base's TLS block is static:
//
//	64 48 8b 04 25 00 00 00 00   mov %fs:0,%rax
//	48 8d 80 <tpoff>             lea x@tpoff(%rax),%rax
var (
	gdPrefix = []byte{0x66, 0x48, 0x8d, 0x3d}
	gdCall   = []byte{0x66, 0x66, 0x48, 0xe8}
	gdToLE   = []byte{0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0, 0x48, 0x8d, 0x80}
	// Local-dynamic: 48 8d 3d <tlsld> lea x@tlsld(%rip),%rdi; e8 <plt32> call.
	ldPrefix = []byte{0x48, 0x8d, 0x3d}
	ldToLE   = []byte{0x66, 0x66, 0x66, 0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0}
)

// TLSSequenceLen reports how many bytes after a TLSGD/TLSLD field the
// rewrite consumes, so the linker can drop the paired call relocation.
func TLSSequenceLen(typ uint32) uint64 {
	switch elf.R_X86_64(typ) {
	case elf.R_X86_64_TLSGD:
		return 12 // field at +4 of 16 bytes
	case elf.R_X86_64_TLSLD:
		return 9 // field at +3 of 12 bytes
	}
	return 0
}

func amd64Apply(r *Reloc) error {
	d, off := r.Data, r.Offset
	put32 := func(v int64, signed bool) error {
		if off+4 > uint64(len(d)) {
			return fmt.Errorf("field at %#x past section end", off)
		}
		if signed && !fitsInt32(v) || !signed && (v < 0 || v > 1<<32-1) {
			return fmt.Errorf("value %#x: %w", v, ErrOutOfRange)
		}
		binary.LittleEndian.PutUint32(d[off:], uint32(v))
		return nil
	}
	put64 := func(v uint64) error {
		if off+8 > uint64(len(d)) {
			return fmt.Errorf("field at %#x past section end", off)
		}
		binary.LittleEndian.PutUint64(d[off:], v)
		return nil
	}
	S, A, P := int64(r.S), r.A, int64(r.P)
	switch elf.R_X86_64(r.Type) {
	case elf.R_X86_64_NONE:
		return nil
	case elf.R_X86_64_64:
		return put64(uint64(S + A))
	case elf.R_X86_64_PC32:
		return put32(S+A-P, true)
	case elf.R_X86_64_PLT32:
		target := S
		if r.L != 0 {
			target = int64(r.L)
		}
		return put32(target+A-P, true)
	case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX, elf.R_X86_64_GOTTPOFF:
		return put32(int64(r.G)+A-P, true)
	case elf.R_X86_64_32:
		return put32(S+A, false)
	case elf.R_X86_64_32S:
		return put32(S+A, true)
	case elf.R_X86_64_PC64:
		return put64(uint64(S + A - P))
	case elf.R_X86_64_GOTOFF64:
		return put64(uint64(S + A - int64(r.GOT)))
	case elf.R_X86_64_GOTPC32:
		return put32(int64(r.GOT)+A-P, true)
	case elf.R_X86_64_GOTPC64:
		return put64(uint64(int64(r.GOT) + A - P))
	case elf.R_X86_64_SIZE32:
		return put32(int64(r.Size)+A, false)
	case elf.R_X86_64_SIZE64:
		return put64(uint64(int64(r.Size) + A))
	case elf.R_X86_64_TPOFF32, elf.R_X86_64_DTPOFF32:
		// After the local-dynamic rewrite %rax holds the thread pointer,
		// so a DTPOFF becomes a TP offset.
		return put32(r.TPOff+A, true)
	case elf.R_X86_64_TPOFF64, elf.R_X86_64_DTPOFF64:
		return put64(uint64(r.TPOff + A))
	case elf.R_X86_64_TLSGD:
		if off < 4 || off+12 > uint64(len(d)) || !eq(d[off-4:off], gdPrefix) || !eq(d[off+4:off+8], gdCall) {
			return fmt.Errorf("unrecognised general-dynamic TLS sequence (compile without -mtls-dialect=gnu2 and without -fno-plt): %w", ErrUnsupportedReloc)
		}
		copy(d[off-4:], gdToLE)
		off += 8
		return put32(r.TPOff+0, true)
	case elf.R_X86_64_TLSLD:
		if off < 3 || off+9 > uint64(len(d)) || !eq(d[off-3:off], ldPrefix) || d[off+4] != 0xe8 {
			return fmt.Errorf("unrecognised local-dynamic TLS sequence: %w", ErrUnsupportedReloc)
		}
		copy(d[off-3:], ldToLE)
		return nil
	}
	return fmt.Errorf("type %d: %w", r.Type, ErrUnsupportedReloc)
}

func eq(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
