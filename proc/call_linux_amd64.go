package proc

// syscallInsnSize is the length of `syscall`; at a syscall-entry stop the
// PC is already past it.
const syscallInsnSize = 2

// setCall points the thread at a call stub: the function's arguments go in
// the SysV registers, and orig_rax = -1 keeps the kernel's syscall-restart
// logic away from the injected context.
func (r *Regs) setCall(entry, sp uint64, args []uint64) error {
	r.Rip, r.Rsp = entry, sp
	r.Orig_rax = ^uint64(0)
	regs := []*uint64{&r.Rdi, &r.Rsi, &r.Rdx, &r.Rcx, &r.R8, &r.R9}
	for i, a := range args {
		*regs[i] = a
	}
	return nil
}

// ResumeContext returns the registers a thread continues with when nobody
// restores its registers through ptrace: like the kernel on a resume, it
// restarts an interrupted system call (rip back over the syscall, rax the
// call number, or restart_syscall for a timed call). The order matches
// arch.CallSavedOrder, then rsp, rip and rflags.
func (r *Regs) ResumeContext() []uint64 {
	rax, rip := r.Rax, r.Rip
	if int64(r.Orig_rax) >= 0 {
		switch int64(r.Rax) {
		case -512, -513, -514: // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
			rax, rip = r.Orig_rax, r.Rip-syscallInsnSize
		case -516: // ERESTART_RESTARTBLOCK
			rax, rip = 219, r.Rip-syscallInsnSize // __NR_restart_syscall
		}
	}
	return []uint64{rax, r.Rbx, r.Rcx, r.Rdx, r.Rsi, r.Rdi, r.Rbp, r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15,
		r.Rsp, rip, r.Eflags}
}
