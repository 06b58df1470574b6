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
	if s.seccompChecked[t.TID] {
		return nil
	}
	audit, sys, stub := s.seccompCalls()
	if audit == 0 {
		return nil
	}
	if err := s.p.CheckSeccomp(t, audit, s.p.SyscallInsn, append(sys, stub...)); err != nil {
		return fmt.Errorf("%w; the target was not changed", err)
	}
	if s.seccompChecked == nil {
		s.seccompChecked = map[int]bool{}
	}
	s.seccompChecked[t.TID] = true
	return nil
}

// checkStubSeccomp checks the system calls of a call stub against the
// filters of t, the thread a remote call is to run in. A filter installed
// without SECCOMP_FILTER_FLAG_TSYNC confines only its own thread, so this
// thread's may differ from the one checkSeccomp looked at.
func (s *session) checkStubSeccomp(t *proc.Thread) error {
	if s.seccompChecked[t.TID] {
		return nil
	}
	audit, _, stub := s.seccompCalls()
	if audit == 0 {
		return nil
	}
	return s.p.CheckSeccomp(t, audit, s.p.SyscallInsn, stub)
}

// seccompCalls lists, for the target's architecture, the system calls the
// engine injects (sys) and those a call stub makes in the thread it runs
// in (stub); audit is 0 for an architecture it does not know.
func (s *session) seccompCalls() (audit uint32, sys, stub []proc.SeccompCall) {
	const anyAddr, size = 0x10000, 0x10000
	a := s.arch
	if a.AuditArch == 0 {
		return 0, nil, nil
	}
	stub = []proc.SeccompCall{{Name: "getpid", Nr: a.SysGetpid}}
	if a.Machine == elf.EM_AARCH64 {
		// The stub reads the thread's signal mask into its frame, and
		// returns through it should the engine die.
		stub = append(stub,
			proc.SeccompCall{Name: "rt_sigprocmask", Nr: a.SysRtSigprocmask, Args: [6]uint64{unix.SIG_BLOCK, 0, anyAddr, 8}},
			proc.SeccompCall{Name: "rt_sigreturn", Nr: a.SysRtSigreturn})
	}
	sys = []proc.SeccompCall{
		{Name: "mmap", Nr: s.arch.SysMmap, Args: [6]uint64{anyAddr, size, unix.PROT_READ | unix.PROT_WRITE,
			unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0}},
		// Every protection a segment or the record gets (link.Segment.Prot).
		{Name: "mprotect", Nr: s.arch.SysMprotect, Args: [6]uint64{anyAddr, size, unix.PROT_READ | unix.PROT_EXEC}},
		{Name: "mprotect", Nr: s.arch.SysMprotect, Args: [6]uint64{anyAddr, size, unix.PROT_READ}},
		{Name: "mprotect", Nr: s.arch.SysMprotect, Args: [6]uint64{anyAddr, size, unix.PROT_READ | unix.PROT_WRITE}},
		{Name: "munmap", Nr: s.arch.SysMunmap, Args: [6]uint64{anyAddr, size}},
		{Name: "prctl", Nr: s.arch.SysPrctl, Args: [6]uint64{unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, anyAddr, size, anyAddr}, MayFail: true},
		// The landing's return to the thread.
		{Name: "rt_sigreturn", Nr: a.SysRtSigreturn},
	}
	return a.AuditArch, sys, stub
}
