package proc

import (
	"errors"

	"github.com/hotpatch/hotpatch/arch"
)

// syscallInsnSize is the length of `svc #0`; at a syscall stop the PC is
// already past it.
const syscallInsnSize = 4

// psrBTYPE is PSTATE.BTYPE: a thread stopped right after an indirect
// branch into a BTI-guarded page has it set, and the instruction it runs
// next must be a landing pad. Cleared when the thread is sent elsewhere.
const psrBTYPE = 3 << 10

// setCall points the thread at a call stub: the function's arguments go in
// x0..x7.
func (r *Regs) setCall(entry, sp uint64, args []uint64) error {
	if len(args) > 8 {
		return errors.New("more than 8 arguments")
	}
	r.Pc, r.Sp = entry, sp
	r.Pstate &^= psrBTYPE
	copy(r.Regs[:], args)
	return nil
}

// CallContext is the signal frame a call stub returns through when nobody
// restores the thread (arch.CallFrame.Saved). It holds the registers the
// thread stopped with: on arm64 the kernel prepares a restart before the
// stop (PC back on the svc, x0 = the first argument), so resuming there
// issues an interrupted call again. rt_sigreturn disarms restart_syscall,
// and x8 keeps the call's own number here, so a relative sleep starts
// over rather than fail with EINTR. The stub fills the frame's signal mask
// and FP/SIMD state itself before anything can use it.
func (r *Regs) CallContext() []byte {
	c := arch.ARM64Context{X: r.Regs, SP: r.Sp, PC: r.Pc, PState: r.Pstate}
	return c.SigFrame()
}
