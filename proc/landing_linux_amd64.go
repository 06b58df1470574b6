package proc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Landing makes an injected system call safe to abandon. The call runs on
// an existing `syscall; ret` sequence, with the stack pointer at a signal
// frame built below the thread's red zone whose return address is libc's
// `__restore_rt` (mov $15,%eax; syscall). A live tracer stops the thread at
// the syscall exit and restores its registers, and the frame is never used.
// If the tracer dies first, the thread finishes the call, returns into
// rt_sigreturn, and the kernel loads its whole context back from the
// frame: registers (rewound over an interrupted system call, as the kernel
// would), the full XSAVE state, and the signal mask. Nothing of the target's
// code is written.
type Landing struct {
	SyscallRet uint64 // address of 0f 05 c3
	RestoreRT  uint64 // address of 48 c7 c0 0f 00 00 00 0f 05
}

// Byte sequences a Landing needs, to be found in the target's code.
var (
	LandingSyscallRet = []byte{0x0f, 0x05, 0xc3}
	LandingRestoreRT  = []byte{0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05}
)

const (
	redZone          = 128
	fpXStateMagic2   = 0x46505845
	ucFPXState       = 0x1
	ucSigcontextSS   = 0x2
	ucStrictRestore  = 0x4
	sigcontextSize   = 256
	ucontextSize     = 8 + 8 + 24 + sigcontextSize + 8
	siginfoSize      = 128
	invalidStackMode = 3 // neither SS_ONSTACK nor SS_DISABLE: leaves the altstack alone
)

// prepareLanding points call at the landing for thread t, whose own
// registers are saved. It leaves call unchanged (plain injection) when no
// landing is configured or the frame cannot be built.
func (p *Process) prepareLanding(t *Thread, call, saved *Regs) error {
	if p.Landing == nil {
		return nil
	}
	xstate, err := getXState(t.TID)
	if err != nil {
		return err
	}
	mask, err := blockedSignals(p.PID, t.TID)
	if err != nil {
		return err
	}
	// Below the red zone: fpstate (64-aligned, then its end magic), and the
	// rt_sigframe under it, whose first word is the return address.
	fpSize := uint64(len(xstate) + 4)
	fp := (saved.Rsp - redZone - fpSize) &^ 63
	frame := (fp - 8 - ucontextSize - siginfoSize) &^ 15
	if !p.onThreadStack(saved.Rsp, frame) {
		return errors.New("landing frame: the stack pointer is not on a thread stack with room")
	}
	buf := make([]byte, fp+fpSize-frame)
	le := binary.LittleEndian
	le.PutUint64(buf[0:], p.Landing.RestoreRT) // pretcode
	uc := buf[8:]
	le.PutUint64(uc[0:], ucFPXState|ucSigcontextSS|ucStrictRestore)
	le.PutUint32(uc[16+8:], invalidStackMode)
	sc := uc[40:]
	ctx := saved.landingContext()
	for i, v := range ctx {
		le.PutUint64(sc[i*8:], v)
	}
	le.PutUint16(sc[144:], uint16(saved.Cs))
	le.PutUint16(sc[146:], uint16(saved.Gs))
	le.PutUint16(sc[148:], uint16(saved.Fs))
	le.PutUint16(sc[150:], uint16(saved.Ss))
	le.PutUint64(sc[184:], fp)
	le.PutUint64(uc[40+sigcontextSize:], mask)
	copy(buf[fp-frame:], xstate)
	le.PutUint32(buf[fp-frame+uint64(len(xstate)):], fpXStateMagic2)
	if _, err := p.WriteAt(buf, frame); err != nil {
		return err
	}
	call.Rip, call.Rsp = p.Landing.SyscallRet, frame
	return nil
}

// restartable reports whether the thread stopped in a system call that the
// kernel restarts when it resumes.
func (p *Process) restartable(r *Regs) bool {
	if int64(r.Orig_rax) < 0 {
		return false
	}
	switch int64(r.Rax) {
	case -512, -513, -514, -516: // ERESTARTSYS, NOINTR, NOHAND, RESTARTBLOCK
		return true
	}
	return false
}

// hijackEntry turns the syscall-entry stop of t's restarted call into the
// injected call nr, returning through the landing; saved are t's registers
// from before the restart.
func (p *Process) hijackEntry(t *Thread, nr uint64, args []uint64, saved *Regs) error {
	var call Regs
	if err := getRegs(t.TID, &call); err != nil {
		return err
	}
	call.Orig_rax = nr // the kernel reads the number here after the stop
	regs := []*uint64{&call.Rdi, &call.Rsi, &call.Rdx, &call.R10, &call.R8, &call.R9}
	for i, a := range args {
		*regs[i] = a
	}
	if err := p.prepareLanding(t, &call, saved); err == nil {
		call.Rip += syscallInsnSize // past the syscall already: return to its ret
	}
	return setRegs(t.TID, &call)
}

// landingContext is the sigcontext register block (r8..r15, rdi, rsi, rbp,
// rbx, rdx, rax, rcx, rsp, rip, eflags) a thread must resume with. An
// interrupted call is issued again: rt_sigreturn disarms restart_syscall,
// so a timed call starts over rather than fail with EINTR.
func (r *Regs) landingContext() []uint64 {
	rax, rip := r.Rax, r.Rip
	if int64(r.Orig_rax) >= 0 {
		switch int64(r.Rax) {
		case -512, -513, -514, -516: // ERESTARTSYS, NOINTR, NOHAND, RESTARTBLOCK
			rax, rip = r.Orig_rax, r.Rip-syscallInsnSize
		}
	}
	return []uint64{r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15,
		r.Rdi, r.Rsi, r.Rbp, r.Rbx, r.Rdx, rax, r.Rcx, r.Rsp, rip, r.Eflags}
}

// getXState reads the thread's XSAVE image; the kernel fills its software
// bytes (FP_XSTATE_MAGIC1, sizes), as rt_sigreturn expects them.
func getXState(tid int) ([]byte, error) {
	buf := make([]byte, 16<<10)
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(tid), unix.NT_X86_XSTATE, uintptr(unsafe.Pointer(&iov)), 0, 0)
	if e != 0 {
		return nil, fmt.Errorf("read xstate: %w", e)
	}
	if iov.Len < 512+64 {
		return nil, errors.New("read xstate: short image")
	}
	return buf[:iov.Len], nil
}

// CallContext is the context a call stub restores the thread to by itself
// (arch.CallFrame.Saved): ResumeContext's words.
func (r *Regs) CallContext() []byte {
	var b []byte
	for _, v := range r.ResumeContext() {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}
