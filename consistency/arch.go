package consistency

import (
	"debug/elf"

	"github.com/hotpatch/hotpatch/arch"
)

// MaxRegs bounds the DWARF register numbers an Arch may track.
const MaxRegs = 64

// Arch describes what the unwinder needs to know about one architecture.
// Register numbers are DWARF numbers.
type Arch struct {
	Name    string
	Machine elf.Machine
	PtrSize int

	// NumRegs is how many registers (0..NumRegs-1) are tracked while
	// unwinding; Thread.Regs is indexed the same way.
	NumRegs int
	// SP is the stack pointer. A caller's SP is the callee's CFA.
	SP uint64
	// RA is the return-address column of the CFI tables.
	RA uint64
	// LinkReg is set on architectures whose calls leave the return address
	// in a register (LR). The top frame's LR is then checked against the
	// ranges as well: a leaf function, or one that has not saved LR yet,
	// still returns into its caller through it.
	LinkReg    bool
	LinkRegNum uint64
	// SyscallLen is the length of the system call instruction: a thread
	// stopped in a restartable system call resumes that many bytes before
	// its PC, so that address is checked too.
	SyscallLen uint64
	// CalleeSaved has bit n set when register n keeps its value across a
	// call, so it stays known in a caller frame when the CFI says nothing.
	CalleeSaved uint64
	// PACMask has the bits of a code address that may hold a pointer
	// authentication code (arm64 PAC: NT_ARM_PAC_MASK of the process).
	// They are cleared from every return address, link register value and
	// scanned stack word before it is compared with the ranges.
	PACMask uint64
	// SigFrame, when set, is used to unwind through a signal trampoline
	// instead of its CFI.
	SigFrame *SigFrameLayout
}

// codeAddr strips a pointer authentication code from a code address.
func (a *Arch) codeAddr(v uint64) uint64 { return v &^ a.PACMask }

// AMD64 is x86-64 (System V ABI).
var AMD64 = &Arch{
	Name:    "amd64",
	Machine: elf.EM_X86_64,
	PtrSize: 8,
	// 0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8..15 r8..r15.
	NumRegs:     16,
	SP:          7,
	RA:          16,
	SyscallLen:  2, // syscall
	CalleeSaved: 1<<3 | 1<<6 | 1<<7 | 1<<12 | 1<<13 | 1<<14 | 1<<15,
}

// ARM64 is AArch64 (AAPCS64): x0..x30 are 0..30, sp is 31, LR is x30.
var ARM64 = &Arch{
	Name:       "arm64",
	Machine:    elf.EM_AARCH64,
	PtrSize:    8,
	NumRegs:    32,
	SP:         31,
	RA:         30,
	LinkReg:    true,
	LinkRegNum: 30,
	SyscallLen: 4, // svc #0
	// x19..x29 and sp.
	CalleeSaved: 0x7ff<<19 | 1<<31,
	// The vDSO's __kernel_rt_sigreturn: mov x8, #139; svc #0. Its CFI
	// restores only x29 and x30 (the interrupted LR, not the PC), so the
	// interrupted context is read from the signal frame instead.
	SigFrame: &SigFrameLayout{
		Trampoline: []byte{0x68, 0x11, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4},
		InsnAlign:  4,
		Regs:       arch.ARM64SigFrameRegs, NumRegs: 31,
		SP: arch.ARM64SigFrameSP, PC: arch.ARM64SigFramePC,
	},
}

// SigFrameLayout says where a signal frame holds the interrupted context,
// for architectures whose signal trampoline's CFI does not describe it.
type SigFrameLayout struct {
	// Trampoline is the code at the return address of a signal handler.
	Trampoline []byte
	// InsnAlign is the size of the trampoline's instructions (its
	// alignment): where a PC stopped inside it may be.
	InsnAlign int
	// Regs is the offset from the frame's start (the stack pointer at the
	// trampoline) of registers 0..NumRegs-1; SP and PC those of the
	// interrupted stack pointer and program counter.
	Regs    uint64
	NumRegs int
	SP, PC  uint64
}

// raIsRegister reports whether the return-address column is a real register
// (LR) rather than a pseudo column, so "same value" has a meaning for it.
func (a *Arch) raIsRegister() bool { return a.RA < uint64(a.NumRegs) }
