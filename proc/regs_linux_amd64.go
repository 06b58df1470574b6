package proc

import (
	"golang.org/x/sys/unix"
)

// Regs is the register file of a stopped thread.
type Regs struct {
	unix.PtraceRegs
	valid bool
}

// PC returns the instruction pointer.
func (r *Regs) PC() uint64 { return r.Rip }

// SP returns the stack pointer.
func (r *Regs) SP() uint64 { return r.Rsp }

// TP returns the thread pointer (the %fs base).
func (r *Regs) TP() uint64 { return r.Fs_base }

// DWARF returns the general registers indexed by DWARF register number.
func (r *Regs) DWARF() []uint64 {
	return []uint64{r.Rax, r.Rdx, r.Rcx, r.Rbx, r.Rsi, r.Rdi, r.Rbp, r.Rsp,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15, r.Rip}
}

func (r *Regs) syscallResult() uint64 { return r.Rax }

// setSyscall prepares a system call at insn. orig_rax = -1 keeps the
// kernel's restart logic away from the injected call; the saved registers,
// restored afterwards, carry the interrupted call's own restart state.
func (r *Regs) setSyscall(insn, nr uint64, args []uint64) {
	r.Rip = insn
	r.Rax = nr
	r.Orig_rax = ^uint64(0)
	regs := []*uint64{&r.Rdi, &r.Rsi, &r.Rdx, &r.R10, &r.R8, &r.R9}
	for i, a := range args {
		*regs[i] = a
	}
}

// syscallSite is where t runs an injected system call.
func (p *Process) syscallSite(*Thread) uint64 { return p.SyscallInsn }

// syscallStop has nothing to do on x86-64: orig_rax = -1, set with the
// registers, already keeps the kernel's restart logic away.
func syscallStop(int, bool, uint64, *Regs) error { return nil }

// PointerAuthMask is 0: x86-64 has no pointer authentication.
func (p *Process) PointerAuthMask(*Thread) uint64 { return 0 }

func getRegs(tid int, r *Regs) error {
	if err := unix.PtraceGetRegs(tid, &r.PtraceRegs); err != nil {
		return err
	}
	r.valid = true
	return nil
}

func setRegs(tid int, r *Regs) error { return unix.PtraceSetRegs(tid, &r.PtraceRegs) }
