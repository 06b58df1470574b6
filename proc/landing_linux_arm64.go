package proc

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/arch"
)

// Landing makes an injected system call safe to abandon. The call runs on
// an existing `svc #0; ret` sequence, with LR at a signal return
// trampoline (`mov x8, #139; svc #0`, the vDSO's __kernel_rt_sigreturn)
// and the stack pointer at a signal frame built below the thread's stack
// pointer. A live tracer stops the thread at the syscall exit and restores
// its registers, and the frame is never used. If the tracer dies first,
// the thread finishes the call, returns into rt_sigreturn, and the kernel
// loads its whole context back from the frame: x0..x30, sp, pc, pstate,
// the FP/SIMD registers and the signal mask. Nothing of the target's code
// is written.
type Landing struct {
	SyscallRet uint64 // address of svc #0; ret
	RestoreRT  uint64 // address of mov x8, #139; svc #0
}

// Byte sequences a Landing needs, to be found 4-byte aligned in the
// target's code.
var (
	LandingSyscallRet = []byte{0x01, 0x00, 0x00, 0xd4, 0xc0, 0x03, 0x5f, 0xd6}
	LandingRestoreRT  = []byte{0x68, 0x11, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4}
)

// landingMargin is kept between the thread's stack pointer and the frame.
// AAPCS64 has no red zone, but a margin costs nothing.
const landingMargin = 256

// prepareLanding points call at the landing for thread t, whose own
// registers are saved. It leaves call unchanged (plain injection) when no
// landing is configured or the frame cannot be built.
func (p *Process) prepareLanding(t *Thread, call, saved *Regs) error {
	l := p.Landing
	if l == nil {
		return nil
	}
	if l.SyscallRet&3 != 0 || l.RestoreRT&3 != 0 {
		return errors.New("landing: misaligned instruction addresses")
	}
	fp, err := getFPSIMD(t.TID)
	if err != nil {
		return err
	}
	mask, err := blockedSignals(p.PID, t.TID)
	if err != nil {
		return err
	}
	c := arch.ARM64Context{X: saved.Regs, SP: saved.Sp, PC: saved.Pc, PState: saved.Pstate, Mask: mask}
	for i := range c.V {
		copy(c.V[i][:], fp[16*i:])
	}
	c.FPSR = binary.LittleEndian.Uint32(fp[512:])
	c.FPCR = binary.LittleEndian.Uint32(fp[516:])
	frame := c.SigFrame()
	at := (saved.Sp - landingMargin - uint64(len(frame))) &^ 15
	if saved.Sp < landingMargin+uint64(len(frame)) || !p.onThreadStack(saved.Sp, at) {
		return errors.New("landing frame: the stack pointer is not on a thread stack with room")
	}
	if _, err := p.WriteAt(frame, at); err != nil {
		return err
	}
	call.Pc, call.Sp, call.Regs[30] = l.SyscallRet, at, l.RestoreRT
	call.Pstate &^= psrBTYPE
	return nil
}

// restartable reports whether the thread would issue a system call when it
// resumes: its PC is on an svc. On arm64 a thread stopped inside an
// interrupted call is already rewound there (x0 = its first argument), so
// this covers every thread the kernel restarts; a thread that merely
// stopped right before an svc is handled the same way.
func (p *Process) restartable(r *Regs) bool {
	var b [4]byte
	if r.Pc&3 != 0 {
		return false
	}
	n, err := p.ReadAt(b[:], r.Pc)
	return err == nil && n == 4 && binary.LittleEndian.Uint32(b[:]) == svc0
}

// hijackEntry turns the syscall-entry stop of t's own (restarted) call
// into the injected call nr, returning through the landing; saved are t's
// registers from before the call, which the frame holds. If the kernel
// turned the call into restart_syscall (a relative sleep), the frame still
// issues the call itself (rt_sigreturn disarms restart_syscall, so the
// sleep starts over), while a live tracer restores x8 = restart_syscall
// and the sleep goes on with its remaining time.
func (p *Process) hijackEntry(t *Thread, nr uint64, args []uint64, saved *Regs) error {
	var call Regs
	if err := getRegs(t.TID, &call); err != nil {
		return err
	}
	cur, err := getSyscallNo(t.TID)
	if err != nil {
		return err
	}
	if err := p.prepareLanding(t, &call, saved); err == nil {
		call.Pc += syscallInsnSize // past the svc already: the call returns to its ret
	}
	if cur == restartSyscall {
		saved.Regs[8] = restartSyscall
	}
	copy(call.Regs[:], args)
	if err := setRegs(t.TID, &call); err != nil {
		return err
	}
	// The kernel reads the number here after the stop, not from x8.
	return setSyscallNo(t.TID, int32(nr))
}

// getFPSIMD reads the thread's FP/SIMD registers (struct
// user_fpsimd_state: vregs[32], fpsr, fpcr).
func getFPSIMD(tid int) ([]byte, error) {
	buf := make([]byte, 528)
	if err := regset(unix.PTRACE_GETREGSET, tid, unix.NT_PRFPREG, unsafe.Pointer(&buf[0]), len(buf)); err != nil {
		return nil, err
	}
	return buf, nil
}
