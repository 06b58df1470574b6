package proc

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// waitStop waits for the stop of t, interrupted at since, and loads its
// registers. A signal that stopped t instead of the interrupt is kept in
// pendingSignal, delivered when t is detached (or by settle). A thread
// that has not stopped within the stop limit, or that is found in an
// uninterruptible sleep once it is a millisecond late, is given up on with
// ErrStopTimeout; it stays seized, and the caller notes it in p.unstopped.
//
// The wait polls: a blocking wait4 cannot be given a time limit, and a
// thread in an uninterruptible sleep (a vfork parent, I/O on a hung file
// system) would hold every other thread stopped until it woke. Naps grow
// with the time already waited, so a thread that stops quickly is seen
// quickly. Measured against a blocking wait4, polling adds about 10% to
// the stop phase (docs/benchmarks.md). Handing the blocking wait to
// another thread of this process (waitid with WNOWAIT, so a waiter left
// behind cannot take a later tracer's status) measured slower still.
func (p *Process) waitStop(t *Thread, since time.Time) error {
	var looked time.Time
	for {
		ws, ready, err := tryWait(t)
		if err != nil {
			return err
		}
		if !ready {
			now := time.Now()
			waited := now.Sub(since)
			giveUp := waited > p.stopLimit()
			if !giveUp && waited >= time.Millisecond && now.Sub(looked) >= time.Millisecond {
				looked = now
				giveUp = p.uninterruptible(t.TID)
			}
			if giveUp {
				return &Error{Op: "stop", TID: t.TID, Err: fmt.Errorf("%w (state %s); retry later", ErrStopTimeout, p.threadState(t.TID))}
			}
			nap(waited/4, 4*time.Microsecond, time.Millisecond)
			continue
		}
		if ws.Exited() || ws.Signaled() {
			return &Error{Op: "wait", TID: t.TID, Err: ErrThreadGone}
		}
		if !ws.Stopped() {
			continue
		}
		kind, sig := stopKind(ws)
		if kind == stopSyscall {
			// A thread a timed-out remote call left in PTRACE_SYSCALL mode
			// (see Call): this stop consumed its interrupt, and registers
			// read at a syscall stop are not all the thread's (arm64 shows
			// the stop's direction in x7). Let it on to the interrupt stop.
			if err := unix.PtraceInterrupt(t.TID); err != nil {
				return &Error{Op: "interrupt", TID: t.TID, Err: err}
			}
			if err := unix.PtraceCont(t.TID, 0); err != nil {
				return &Error{Op: "resume to interrupt", TID: t.TID, Err: err}
			}
			continue
		}
		if kind == stopSignal {
			t.pendingSignal = sig
		}
		if err := getRegs(t.TID, &t.Regs); err != nil {
			return &Error{Op: "read registers", TID: t.TID, Err: err}
		}
		return nil
	}
}

// uninterruptible reports whether thread tid sleeps where no signal or
// interrupt reaches it.
func (p *Process) uninterruptible(tid int) bool {
	return taskState(p.PID, tid) == 'D'
}

// threadState describes the scheduler state of thread tid, for errors.
func (p *Process) threadState(tid int) string {
	switch c := taskState(p.PID, tid); c {
	case 0:
		return "unknown"
	case 'D':
		return "D, uninterruptible sleep"
	default:
		return string(c)
	}
}

// stopLimit bounds the wait for one thread's stop.
func (p *Process) stopLimit() time.Duration {
	if p.StopLimit > 0 {
		return p.StopLimit
	}
	return DefaultStopLimit
}

// waitBounded waits for t's next stop, which may take long: t runs code of
// the target (a remote call) that can block, in a system call or a lock.
// At the deadline t is interrupted, so it stops wherever it is; a thread
// that does not stop even then is given up on with ErrStopTimeout.
func (p *Process) waitBounded(t *Thread, deadline time.Time) (unix.WaitStatus, error) {
	var interrupted time.Time
	start := time.Now()
	for {
		ws, ready, err := tryWait(t)
		if err != nil {
			return ws, err
		}
		if ready {
			if ws.Exited() || ws.Signaled() {
				delete(p.stopped, t.TID)
				return ws, &Error{Op: "wait", TID: t.TID, Err: ErrThreadGone}
			}
			if ws.Stopped() {
				return ws, nil
			}
			continue
		}
		now := time.Now()
		switch {
		case interrupted.IsZero() && now.After(deadline):
			if err := unix.PtraceInterrupt(t.TID); err != nil {
				return ws, &Error{Op: "interrupt", TID: t.TID, Err: err}
			}
			interrupted = now
		case !interrupted.IsZero() && now.Sub(interrupted) > p.stopLimit():
			return ws, &Error{Op: "stop", TID: t.TID, Err: fmt.Errorf("%w (state %s)", ErrStopTimeout, p.threadState(t.TID))}
		}
		nap(now.Sub(start)/4, 20*time.Microsecond, 5*time.Millisecond)
	}
}

// tryWait collects t's next wait status if there is one, without blocking.
func tryWait(t *Thread) (ws unix.WaitStatus, ready bool, err error) {
	for {
		pid, err := unix.Wait4(t.TID, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, false, &Error{Op: "wait", TID: t.TID, Err: err}
		}
		return ws, pid != 0, nil
	}
}

// nap sleeps for d, kept within [lo, hi].
func nap(d, lo, hi time.Duration) {
	ts := unix.NsecToTimespec(min(max(d, lo), hi).Nanoseconds())
	unix.Nanosleep(&ts, nil)
}
