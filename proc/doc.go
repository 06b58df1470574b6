// Package proc controls a live Linux process for patching: it stops and
// resumes its threads with ptrace, reads and writes its memory in bulk
// through /proc/PID/mem, and runs system calls inside it.
//
// Every ptrace request of a Process runs on one goroutine locked to one OS
// thread, because the kernel ties a tracee to the thread that attached it.
// Threads are seized (PTRACE_SEIZE), so a tracer that dies simply leaves
// them running: no signal is injected and nothing stays stopped.
//
// Remote system calls reuse a syscall instruction that already exists in the
// target; the target's code is never written for them. A thread that was
// stopped inside a blocking system call resumes that call afterwards, so the
// program never sees EINTR or a lost wake-up.
package proc
