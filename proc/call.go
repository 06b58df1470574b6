package proc

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/faults"
)

// FaultMidCall is the fault point right after a remote call starts running.
const FaultMidCall = "mid-call"

// ErrCallTimeout means a remote call did not finish in time. The thread
// was let go to finish it on its own: the call stub then restores its
// context by itself, so the stub's memory must stay mapped.
var ErrCallTimeout = errors.New("remote call did not finish in time")

// Call runs a function in the stopped thread t through a call stub in patch
// memory (see arch.EncodeCallStub): t starts at entry with its stack
// pointer at sp and args in the argument registers, and the call is over
// when t enters the system call at marker. Signals arriving meanwhile are
// delivered to the callee, as they would be with the engine gone.
// Afterwards t's own registers are restored and t is parked in an
// interrupt stop, exactly as after Syscall.
//
// A call that does not finish within timeout is let go to finish on its
// own; inFlight (if not nil) runs first, with t still stopped, so the
// caller can record that the call is still running before it can end.
func (p *Process) Call(t *Thread, entry, sp, marker uint64, timeout time.Duration, inFlight func(), args ...uint64) error {
	if _, ok := p.stopped[t.TID]; !ok {
		return &Error{Op: "remote call", TID: t.TID, Err: errors.New("thread is not stopped")}
	}
	if t.pendingSignal != 0 {
		// The caller saved a context from t.Regs, which delivering the
		// signal would change.
		return &Error{Op: "remote call", TID: t.TID, Err: errors.New("thread is stopped for a signal")}
	}
	return p.do(func() error {
		saved := t.Regs
		vector := saveVectorState(t.TID)
		call := saved
		if err := call.setCall(entry, sp, args); err != nil {
			return &Error{Op: "remote call", TID: t.TID, Err: err}
		}
		if err := setRegs(t.TID, &call); err != nil {
			return &Error{Op: "set registers", TID: t.TID, Err: err}
		}
		deadline := time.Now().Add(timeout)
		var sig unix.Signal
		for first := true; ; first = false {
			// Syscall stops let the tracer see the marker; the called code's
			// own system calls just pass through, and so do signals: the
			// stub's stack has room for their handlers, and it is where
			// they would run if the engine were gone.
			if err := unix.PtraceSyscall(t.TID, int(sig)); err != nil {
				if first {
					setRegs(t.TID, &saved)
				}
				return &Error{Op: "resume to call", TID: t.TID, Err: err}
			}
			sig = 0
			if first {
				faults.Point(FaultMidCall)
			}
			ws, err := p.waitBounded(t, deadline)
			if errors.Is(err, ErrStopTimeout) {
				// Interrupted at the limit, and in an uninterruptible sleep:
				// it stays seized until it stops or the tracer goes.
				if inFlight != nil {
					inFlight()
				}
				delete(p.stopped, t.TID)
				p.unstopped[t.TID] = true
				return &Error{Op: "remote call", TID: t.TID, Err: ErrCallTimeout}
			}
			if err != nil {
				return err
			}
			kind, s := stopKind(ws)
			if kind == stopSyscall {
				var now Regs
				if err := getRegs(t.TID, &now); err != nil {
					return &Error{Op: "read registers", TID: t.TID, Err: err}
				}
				if now.PC() == marker+syscallInsnSize {
					break
				}
			} else if kind == stopSignal {
				sig = s
			}
			if time.Now().After(deadline) {
				// The callee may hold a lock: never abandon it half-way.
				// Let the thread go; the stub finishes and restores it.
				if inFlight != nil {
					inFlight()
				}
				delete(p.stopped, t.TID)
				detach(t.TID, int(sig))
				return &Error{Op: "remote call", TID: t.TID, Err: ErrCallTimeout}
			}
		}
		// At the marker's syscall entry: let the harmless getpid finish, then
		// put the thread's own registers back.
		if err := unix.PtraceSyscall(t.TID, 0); err != nil {
			return &Error{Op: "resume to call exit", TID: t.TID, Err: err}
		}
		if _, err := p.wait(t); err != nil {
			return err
		}
		// As after an injected call: the registers put back are not in a
		// system call (arm64: syscallno -1), or their x0 might read as an
		// -ERESTART... code on the way out.
		if err := syscallStop(t.TID, false, 0, &saved); err != nil {
			return &Error{Op: "syscall stop", TID: t.TID, Err: err}
		}
		if err := setRegs(t.TID, &saved); err != nil {
			return &Error{Op: "restore registers", TID: t.TID, Err: err}
		}
		t.Regs = saved
		if err := restoreVectorState(t.TID, vector); err != nil {
			return &Error{Op: "restore registers", TID: t.TID, Err: err}
		}
		return p.park(t)
	})
}

// park puts t, stopped in a syscall or signal stop, back into an interrupt
// stop: the one a dying tracer leaves cleanly, with no signal to deliver.
// There it writes t.Regs into the thread once more: at a syscall stop,
// arm64 discards what a tracer writes into x7 (the kernel shows the stop's
// direction there and puts its own value back when the thread goes on),
// so registers restored at a syscall stop keep whatever x7 the injected
// code left. An interrupt, group or signal-delivery stop keeps them all.
func (p *Process) park(t *Thread) error {
	if err := unix.PtraceInterrupt(t.TID); err != nil {
		return &Error{Op: "interrupt", TID: t.TID, Err: err}
	}
	if err := unix.PtraceCont(t.TID, 0); err != nil {
		return &Error{Op: "resume to interrupt", TID: t.TID, Err: err}
	}
	for {
		ws, err := p.wait(t)
		if err != nil {
			return err
		}
		kind, sig := stopKind(ws)
		if kind == stopEvent || kind == stopSignal {
			if err := setRegs(t.TID, &t.Regs); err != nil {
				return &Error{Op: "restore registers", TID: t.TID, Err: err}
			}
		}
		switch kind {
		case stopEvent:
			// The interrupt, or a group stop (the process got SIGSTOP),
			// which also consumed the interrupt.
			return nil
		case stopSignal:
			// t runs on its own registers again: deliver the signal as
			// the kernel would, then park.
			t.pendingSignal = sig
			return p.settle(t)
		}
		if err := unix.PtraceCont(t.TID, 0); err != nil {
			return &Error{Op: "resume to interrupt", TID: t.TID, Err: err}
		}
	}
}
