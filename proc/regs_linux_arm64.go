package proc

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Regs is the register file of a stopped thread.
type Regs struct {
	unix.PtraceRegs
	valid bool
}

// PC returns the program counter.
func (r *Regs) PC() uint64 { return r.Pc }

// SP returns the stack pointer.
func (r *Regs) SP() uint64 { return r.Sp }

// DWARF returns the general registers indexed by DWARF register number:
// x0..x30, then sp (31).
func (r *Regs) DWARF() []uint64 {
	out := make([]uint64, 32)
	copy(out, r.Regs[:])
	out[31] = r.Sp
	return out
}

func (r *Regs) syscallResult() uint64 { return r.Regs[0] }

// setSyscall prepares a system call at insn: number in x8, arguments in
// x0..x5.
func (r *Regs) setSyscall(insn, nr uint64, args []uint64) {
	r.Pc = insn
	r.Regs[8] = nr
	for i, a := range args {
		r.Regs[i] = a
	}
}

const (
	svc0           = 0xd4000001
	noSyscall      = -1
	restartSyscall = unix.SYS_RESTART_SYSCALL
)

// syscallSite is where t runs an injected system call: its own PC when
// that is an svc instruction, else the one the caller located.
//
// A thread stopped on its way out of an interrupted system call already
// has its restart prepared when it stops: the kernel set x0 back to the
// first argument and the PC back to the svc. Only one thing is left for
// after the stop: for -ERESTART_RESTARTBLOCK (nanosleep, futex with a
// timeout, poll) it sets x8 to restart_syscall, but only if the PC still
// points at that svc when the thread runs again. Running the injected call
// at the same svc lets the kernel do that; syscallStop sees it happen at
// the syscall-entry stop and keeps it for the thread's own registers.
func (p *Process) syscallSite(t *Thread) uint64 {
	pc := t.Regs.Pc
	var b [4]byte
	if pc&3 == 0 {
		if n, err := p.ReadAt(b[:], pc); err == nil && n == 4 && binary.LittleEndian.Uint32(b[:]) == svc0 {
			return pc
		}
	}
	return p.SyscallInsn
}

// syscallStop runs at the injected call's syscall stops. At entry: if the
// kernel turned the call into restart_syscall (see syscallSite), run nr
// anyway and have the thread resume into restart_syscall later. At exit:
// mark the thread as not in a system call (syscallno -1), so the restart
// logic on the way out does not act on the registers restored into it,
// whose x0 may look like an -ERESTART... code.
func syscallStop(tid int, entry bool, nr uint64, saved *Regs) error {
	if !entry {
		return setSyscallNo(tid, noSyscall)
	}
	cur, err := getSyscallNo(tid)
	if err != nil {
		return err
	}
	if cur == int32(nr) {
		return nil
	}
	if cur == restartSyscall {
		saved.Regs[8] = restartSyscall
	}
	return setSyscallNo(tid, int32(nr))
}

func getSyscallNo(tid int) (int32, error) {
	var v int32
	err := regset(unix.PTRACE_GETREGSET, tid, unix.NT_ARM_SYSTEM_CALL, unsafe.Pointer(&v), 4)
	return v, err
}

func setSyscallNo(tid int, v int32) error {
	return regset(unix.PTRACE_SETREGSET, tid, unix.NT_ARM_SYSTEM_CALL, unsafe.Pointer(&v), 4)
}

func regset(req, tid, typ int, p unsafe.Pointer, n int) error {
	iov := unix.Iovec{Base: (*byte)(p)}
	iov.SetLen(n)
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), uintptr(typ), uintptr(unsafe.Pointer(&iov)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// PointerAuthMask returns the bits of a code address that hold a pointer
// authentication code in the process (NT_ARM_PAC_MASK), or 0 when the CPU
// or kernel has none. Return addresses saved by a function built with
// -mbranch-protection are signed; clearing these bits recovers them.
func (p *Process) PointerAuthMask(t *Thread) uint64 {
	var mask [2]uint64 // data_mask, insn_mask
	err := p.do(func() error {
		return regset(unix.PTRACE_GETREGSET, t.TID, unix.NT_ARM_PAC_MASK, unsafe.Pointer(&mask), 16)
	})
	if err != nil {
		return 0
	}
	return mask[1]
}

func getRegs(tid int, r *Regs) error {
	if err := unix.PtraceGetRegs(tid, &r.PtraceRegs); err != nil {
		return err
	}
	r.valid = true
	return nil
}

func setRegs(tid int, r *Regs) error { return unix.PtraceSetRegs(tid, &r.PtraceRegs) }
