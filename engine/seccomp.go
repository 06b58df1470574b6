package engine

import (
	"debug/elf"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/proc"
)

// checkSeccomp refuses, before the first injected system call, a thread
// whose seccomp filter would kill the process (or fail the call) on one
// of the calls the engine makes on it. Filters are usually the same for
// every thread (SECCOMP_FILTER_FLAG_TSYNC); the thread checked is the one
// the calls run on.
func (s *session) checkSeccomp(t *proc.Thread) error {
	const anyAddr, size = 0x10000, 0x10000
	if s.seccompChecked[t.TID] {
		return nil
	}
	var audit uint32
	var getpid, sigreturn uint64
	var extra []proc.SeccompCall
	switch s.arch.Machine {
	case elf.EM_X86_64:
		audit, getpid, sigreturn = unix.AUDIT_ARCH_X86_64, 39, 15
	case elf.EM_AARCH64:
		audit, getpid, sigreturn = unix.AUDIT_ARCH_AARCH64, 172, 139
		// The call stub reads the thread's signal mask into its frame.
		extra = append(extra, proc.SeccompCall{Name: "rt_sigprocmask", Nr: 135, Args: [6]uint64{unix.SIG_BLOCK, 0, anyAddr, 8}})
	default:
		return nil
	}
	calls := []proc.SeccompCall{
		{Name: "mmap", Nr: s.arch.SysMmap, Args: [6]uint64{anyAddr, size, unix.PROT_READ | unix.PROT_WRITE,
			unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0}},
		{Name: "mprotect", Nr: s.arch.SysMprotect, Args: [6]uint64{anyAddr, size, unix.PROT_READ | unix.PROT_EXEC}},
		{Name: "mprotect", Nr: s.arch.SysMprotect, Args: [6]uint64{anyAddr, size, unix.PROT_READ}},
		{Name: "munmap", Nr: s.arch.SysMunmap, Args: [6]uint64{anyAddr, size}},
		{Name: "prctl", Nr: s.arch.SysPrctl, Args: [6]uint64{unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, anyAddr, size, anyAddr}, MayFail: true},
		// The marker of a call stub, and the landing's return to the thread.
		{Name: "getpid", Nr: getpid},
		{Name: "rt_sigreturn", Nr: sigreturn},
	}
	calls = append(calls, extra...)
	if err := s.p.CheckSeccomp(t, audit, s.p.SyscallInsn, calls); err != nil {
		return fmt.Errorf("%w; the target was not changed", err)
	}
	if s.seccompChecked == nil {
		s.seccompChecked = map[int]bool{}
	}
	s.seccompChecked[t.TID] = true
	return nil
}
