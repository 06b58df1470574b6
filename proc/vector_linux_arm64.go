package proc

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SVE state and system calls. Any svc discards a thread's SVE state beyond
// the FP/SIMD registers (the upper bits of the Z registers, the P and FFR
// registers). A thread stopped in the middle of SVE code, not in a system
// call, would lose it to an injected call or a remote call: so its state
// is read before (NT_ARM_SVE) and written back once it is parked again.

const (
	ntARMSVE     = 0x405 // NT_ARM_SVE
	svePTRegsSVE = 1     // SVE_PT_REGS_SVE: the regset holds live SVE state
)

// saveVectorState returns the thread's SVE register state when it is live,
// or nil when the thread has only FP/SIMD state (which system calls keep).
func saveVectorState(tid int) []byte {
	buf := make([]byte, 64<<10) // more than the largest vector length needs
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(tid), ntARMSVE, uintptr(unsafe.Pointer(&iov)), 0, 0)
	if e != 0 || iov.Len < 16 {
		return nil // no SVE on this CPU or kernel
	}
	// struct user_sve_header: size, max_size (u32), vl, max_vl, flags (u16).
	if binary.LittleEndian.Uint16(buf[12:])&svePTRegsSVE == 0 {
		return nil
	}
	return buf[:iov.Len]
}

// restoreVectorState writes back what saveVectorState returned.
func restoreVectorState(tid int, state []byte) error {
	if state == nil {
		return nil
	}
	iov := unix.Iovec{Base: &state[0]}
	iov.SetLen(len(state))
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETREGSET, uintptr(tid), ntARMSVE, uintptr(unsafe.Pointer(&iov)), 0, 0); e != 0 {
		return fmt.Errorf("write SVE state: %w", e)
	}
	return nil
}
