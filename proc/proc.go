package proc

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/faults"
)

var (
	// ErrNoProcess means the PID does not exist or is not accessible.
	ErrNoProcess = errors.New("no such process")
	// ErrPermission means the caller may not trace the process.
	ErrPermission = errors.New("not permitted to trace process")
	// ErrThreadGone means a thread exited while it was being controlled.
	ErrThreadGone = errors.New("thread exited")
	// ErrStopTimeout means a thread did not reach its stop in time: it is
	// in an uninterruptible sleep (a vfork parent, I/O on a stuck file
	// system), which no tracer can interrupt.
	ErrStopTimeout = errors.New("thread did not stop in time")
)

// DefaultStopLimit is how long a thread may take to reach its stop.
const DefaultStopLimit = 250 * time.Millisecond

// Error is a failed operation on one thread or address.
type Error struct {
	Op   string
	TID  int
	Addr uint64
	Err  error
}

func (e *Error) Error() string {
	if e.Addr != 0 {
		return fmt.Sprintf("%s (thread %d, address %#x): %v", e.Op, e.TID, e.Addr, e.Err)
	}
	return fmt.Sprintf("%s (thread %d): %v", e.Op, e.TID, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// FaultMidSyscall is the fault point right after an injected system call
// starts running.
const FaultMidSyscall = "mid-syscall"

// FaultSyscallEntered is the fault point at the entry of an injected system
// call that took over a restarted one.
const FaultSyscallEntered = "syscall-entered"

// Thread is a seized thread of the target that is currently stopped.
type Thread struct {
	TID  int
	Regs Regs
	// pendingSignal is set while the thread sits in a signal-delivery
	// stop: detaching with it delivers the signal. Only that stop injects
	// a signal on resume; from any other stop the kernel drops it.
	pendingSignal unix.Signal
}

// Kinds of ptrace stop. TrapCause cannot tell them apart: it is -1 for any
// stop whose signal is not SIGTRAP, a signal-delivery stop and a group
// stop alike.
const (
	stopOther   = iota
	stopSyscall // syscall entry or exit (SIGTRAP|0x80, PTRACE_O_TRACESYSGOOD)
	stopEvent   // PTRACE_EVENT_STOP: an interrupt, or a group stop (SIGSTOP...)
	stopSignal  // signal-delivery stop: the signal is delivered on resume
)

func stopKind(ws unix.WaitStatus) (int, unix.Signal) {
	sig := ws.StopSignal()
	switch event := uint32(ws) >> 16; {
	case sig == unix.SIGTRAP|0x80:
		return stopSyscall, 0
	case event == unix.PTRACE_EVENT_STOP:
		return stopEvent, 0
	case event != 0:
		return stopOther, 0
	}
	return stopSignal, sig
}

// Process is a target process. It is not safe for concurrent use.
type Process struct {
	PID int

	mem     *os.File
	reqs    chan func()
	tracer  atomic.Int64 // OS thread id of the ptrace thread
	stopped map[int]*Thread
	// unstopped are threads seized and interrupted that did not stop in
	// time. They stay seized: a thread that is not stopped cannot be
	// detached. Their stop is collected by a later StopAll or StopThread,
	// or, when the process is closed, the kernel lets them go as the
	// tracer thread exits.
	unstopped map[int]bool
	// StopLimit bounds the wait for one thread's stop (DefaultStopLimit
	// when zero), so a thread that cannot stop never holds the others
	// stopped for long.
	StopLimit time.Duration
	// StopStarted is when the last StopAll interrupted its first thread:
	// the start of the pause.
	StopStarted time.Time
	// SyscallInsn is the address of a system call instruction inside the
	// target, used by Syscall. The caller finds it in the target's code.
	SyscallInsn uint64
	closed      bool
	// Landing, when set, makes injected system calls safe to abandon
	// (see Landing).
	Landing *Landing
}

// Open opens a process for memory access and control. It does not stop it.
func Open(pid int) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	mem, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/mem", os.O_RDWR, 0)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		case errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("pid %d: %w (run as root or with CAP_SYS_PTRACE)", pid, ErrPermission)
		}
		return nil, fmt.Errorf("open memory of pid %d: %w", pid, err)
	}
	p := &Process{PID: pid, mem: mem, reqs: make(chan func()), stopped: map[int]*Thread{}, unstopped: map[int]bool{}}
	go p.serve()
	return p, nil
}

// serve runs every ptrace request on one OS thread: the kernel only accepts
// requests from the thread that seized the tracee.
//
// The thread also runs at real-time priority where permitted: while the
// target is stopped, the threads it wakes (or the target's own busy
// threads) must not take the CPU from the tracer and stretch the pause.
func (p *Process) serve() {
	runtime.LockOSThread()
	unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 1}, 0)
	p.tracer.Store(int64(unix.Gettid()))
	for f := range p.reqs {
		f()
	}
	// The thread exits locked: the kernel then detaches every thread it
	// still traces, including unstopped ones, and clears their pending
	// interrupts.
}

// do runs f on the ptrace thread. Called from inside Run, it runs f inline:
// the caller is already there.
func (p *Process) do(f func() error) error {
	// Only the serving goroutine runs on that OS thread (it is locked to
	// it). A flag set around each request would not do: the caller may see
	// it still set after its own request finished, and run f elsewhere.
	if int64(unix.Gettid()) == p.tracer.Load() {
		return f()
	}
	done := make(chan error, 1)
	p.reqs <- func() { done <- f() }
	return <-done
}

// Run runs fn on the ptrace thread, so a whole stop-check-resume sequence
// happens on one high-priority thread without hand-offs between threads.
func (p *Process) Run(fn func() error) error { return p.do(fn) }

// Close resumes any stopped thread and releases the process.
// Closing twice is harmless.
func (p *Process) Close() error {
	if p.closed {
		return nil
	}
	err := p.ResumeAll()
	p.closed = true
	close(p.reqs)
	p.mem.Close()
	if len(p.unstopped) > 0 {
		// They are let go only when the ptrace thread has exited: wait
		// for that, so a new Process can seize them at once.
		task := "/proc/self/task/" + strconv.FormatInt(p.tracer.Load(), 10)
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if _, statErr := os.Stat(task); statErr != nil {
				break
			}
		}
	}
	return err
}

// ReadAt reads target memory at addr.
func (p *Process) ReadAt(b []byte, addr uint64) (int, error) {
	n, err := p.mem.ReadAt(b, int64(addr))
	if err != nil {
		return n, &Error{Op: "read memory", TID: p.PID, Addr: addr, Err: err}
	}
	return n, nil
}

// WriteAt writes target memory at addr. Through /proc/PID/mem the kernel
// writes even read-only code pages and keeps instruction caches coherent.
func (p *Process) WriteAt(b []byte, addr uint64) (int, error) {
	n, err := p.mem.WriteAt(b, int64(addr))
	if err != nil {
		return n, &Error{Op: "write memory", TID: p.PID, Addr: addr, Err: err}
	}
	return n, nil
}

// Threads lists the thread ids of the process, sorted.
func (p *Process) Threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(p.PID) + "/task")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pid %d: %w", p.PID, ErrNoProcess)
		}
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	sort.Ints(tids)
	return tids, nil
}

// Stopped returns the currently stopped threads, sorted by TID.
func (p *Process) Stopped() []*Thread {
	ts := make([]*Thread, 0, len(p.stopped))
	for _, t := range p.stopped {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].TID < ts[j].TID })
	return ts
}

// StopThread stops one thread (the main thread when tid is 0).
func (p *Process) StopThread(tid int) (*Thread, error) {
	if tid == 0 {
		tid = p.PID
	}
	if t, ok := p.stopped[tid]; ok {
		return t, nil
	}
	var t *Thread
	err := p.do(func() error {
		var err error
		t, err = p.seizeAndStop(tid)
		return err
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// StopAll stops every thread, including threads created while stopping.
// It returns when a fresh listing of the threads finds none running.
func (p *Process) StopAll() ([]*Thread, error) {
	p.StopStarted = time.Time{}
	err := p.do(func() error {
		for round := 0; ; round++ {
			tids, err := p.Threads()
			if err != nil {
				return err
			}
			// Seize first: it does not stop a thread, so the pause starts
			// only with the interrupts that follow, back to back.
			var seized []int
			var seizeErr error
			for _, tid := range tids {
				if _, ok := p.stopped[tid]; ok {
					continue
				}
				if p.unstopped[tid] {
					// Seized and interrupted by an earlier attempt.
					delete(p.unstopped, tid)
					p.stopped[tid] = &Thread{TID: tid}
					seized = append(seized, tid)
					continue
				}
				if err := seize(tid); err != nil {
					if err == unix.ESRCH || (err == unix.EPERM && p.exited(tid)) {
						continue // exited meanwhile; a zombie cannot be seized
					}
					seizeErr = seizeError(tid, err)
					break
				}
				p.stopped[tid] = &Thread{TID: tid}
				seized = append(seized, tid)
			}
			if len(seized) == 0 && seizeErr == nil {
				break
			}
			if p.StopStarted.IsZero() {
				p.StopStarted = time.Now()
			}
			// Interrupt every seized thread even after a failure: a seized
			// thread must be stopped before it can be detached.
			for _, tid := range seized {
				if err := unix.PtraceInterrupt(tid); err != nil && err != unix.ESRCH && seizeErr == nil {
					seizeErr = &Error{Op: "interrupt", TID: tid, Err: err}
				}
			}
			// Wait for this round's stops before listing again, so a thread
			// cloned by a not-yet-stopped thread is seen next round.
			interrupted := time.Now()
			for _, tid := range seized {
				t := p.stopped[tid]
				if err := p.waitStop(t, interrupted); err != nil {
					if errors.Is(err, ErrThreadGone) {
						delete(p.stopped, tid)
						continue
					}
					if errors.Is(err, ErrStopTimeout) {
						delete(p.stopped, tid)
						p.unstopped[tid] = true
					}
					if seizeErr == nil {
						seizeErr = err
					}
				}
			}
			if seizeErr != nil {
				return seizeErr
			}
			if round > 1000 {
				return &Error{Op: "stop threads", TID: p.PID, Err: errors.New("threads keep being created")}
			}
		}
		return nil
	})
	if err != nil {
		p.ResumeAll()
		return nil, err
	}
	return p.Stopped(), nil
}

// exited reports whether thread tid is gone or a zombie that only waits to
// be reaped: ptrace refuses those with EPERM, which then means nothing.
func (p *Process) exited(tid int) bool {
	c := taskState(p.PID, tid)
	return c == 0 || c == 'Z' || c == 'X'
}

func seizeError(tid int, err error) error {
	if err == unix.EPERM {
		return &Error{Op: "seize", TID: tid, Err: fmt.Errorf("%w (another tracer attached, or missing CAP_SYS_PTRACE)", ErrPermission)}
	}
	return &Error{Op: "seize", TID: tid, Err: err}
}

// seizeAndStop must run on the ptrace thread.
func (p *Process) seizeAndStop(tid int) (*Thread, error) {
	t := &Thread{TID: tid}
	if p.unstopped[tid] {
		delete(p.unstopped, tid) // seized and interrupted before
	} else {
		if err := seize(tid); err != nil {
			if err == unix.ESRCH || (err == unix.EPERM && p.exited(tid)) {
				return nil, &Error{Op: "seize", TID: tid, Err: ErrThreadGone}
			}
			return nil, seizeError(tid, err)
		}
		if err := unix.PtraceInterrupt(tid); err != nil {
			unix.PtraceDetach(tid)
			return nil, &Error{Op: "interrupt", TID: tid, Err: err}
		}
	}
	// A signal may stop the thread before the interrupt does. The thread
	// was running a moment ago: deliver it now, so the thread is returned
	// in an interrupt stop with the registers it will run on.
	err := p.waitStop(t, time.Now())
	if err == nil {
		err = p.settle(t)
	}
	if err != nil {
		switch {
		case errors.Is(err, ErrStopTimeout):
			p.unstopped[tid] = true
		case !errors.Is(err, ErrThreadGone):
			detach(tid, int(t.pendingSignal)) // never leave it seized
		}
		return nil, err
	}
	p.stopped[tid] = t
	return t, nil
}

// settle delivers the signal t is stopped for, exactly as the kernel would
// have without a tracer, and stops t again in an interrupt (or group)
// stop with its registers reloaded. It must run on the ptrace thread.
func (p *Process) settle(t *Thread) error {
	for t.pendingSignal != 0 {
		sig := t.pendingSignal
		// A signal-delivery stop cancels a pending interrupt: ask again.
		if err := unix.PtraceInterrupt(t.TID); err != nil {
			return &Error{Op: "interrupt", TID: t.TID, Err: err}
		}
		if err := unix.PtraceCont(t.TID, int(sig)); err != nil {
			return &Error{Op: "deliver signal", TID: t.TID, Err: err}
		}
		t.pendingSignal = 0
		if err := p.waitStop(t, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// ResumeAll detaches every stopped thread; each continues exactly where it
// stopped, with any signal it was about to receive.
func (p *Process) ResumeAll() error {
	if len(p.stopped) == 0 {
		return nil
	}
	return p.do(func() error {
		var first error
		for tid, t := range p.stopped {
			if err := detach(tid, int(t.pendingSignal)); err != nil && err != unix.ESRCH && first == nil {
				first = &Error{Op: "detach", TID: tid, Err: err}
			}
			delete(p.stopped, tid)
		}
		return first
	})
}

// Resume detaches one stopped thread.
func (p *Process) Resume(t *Thread) error {
	if _, ok := p.stopped[t.TID]; !ok {
		return nil
	}
	return p.do(func() error {
		delete(p.stopped, t.TID)
		if err := detach(t.TID, int(t.pendingSignal)); err != nil && err != unix.ESRCH {
			return &Error{Op: "detach", TID: t.TID, Err: err}
		}
		return nil
	})
}

// seize attaches without stopping. TRACESYSGOOD marks syscall stops with
// SIGTRAP|0x80, which is not a valid signal: should the tracer die in such
// a stop, the kernel has no signal to deliver to the target.
func seize(tid int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(tid), 0, unix.PTRACE_O_TRACESYSGOOD, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func detach(tid, sig int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(tid), 0, uintptr(sig), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Syscall runs system call nr with args in the stopped thread t, through
// the instruction at p.SyscallInsn, and returns the raw result.
//
// The call runs between a syscall-enter and a syscall-exit stop, never a
// single-step: a tracer that dies in a single-step stop leaves a SIGTRAP
// that kills the target. Afterwards t's registers are restored and t is
// parked in a PTRACE_EVENT_STOP again, from which a dying tracer lets it go
// cleanly, and from which the kernel restarts a blocking call t was in.
func (p *Process) Syscall(t *Thread, nr uint64, args ...uint64) (uint64, error) {
	if p.SyscallInsn == 0 {
		return 0, errors.New("remote syscall: no syscall instruction located in the target")
	}
	if _, ok := p.stopped[t.TID]; !ok {
		return 0, &Error{Op: "remote syscall", TID: t.TID, Err: errors.New("thread is not stopped")}
	}
	var ret uint64
	err := p.do(func() error {
		// The thread runs the call from an interrupt stop, with nothing to
		// deliver: a signal it stopped for is delivered first.
		if err := p.settle(t); err != nil {
			return err
		}
		var saved, call Regs
		var vector []byte
		hijack := false
		inject := func() error {
			saved = t.Regs
			vector = saveVectorState(t.TID)
			// A thread stopped in an interrupted call: let the kernel
			// restart it and run the injected call at its entry instead.
			// Only then has the kernel put back the mask that ppoll and
			// the like swap in for the call, and the landing frame must
			// hold the thread's own. Should the engine die before that,
			// the thread just runs its own call again.
			if hijack = p.Landing != nil && p.restartable(&saved); hijack {
				return nil
			}
			call = saved
			call.setSyscall(p.syscallSite(t), nr, args)
			if err := p.prepareLanding(t, &call, &saved); err != nil {
				call = saved
				call.setSyscall(p.syscallSite(t), nr, args)
			}
			if err := setRegs(t.TID, &call); err != nil {
				return &Error{Op: "set registers", TID: t.TID, Err: err}
			}
			return nil
		}
		if err := inject(); err != nil {
			return err
		}
		restored := false
		defer func() {
			if !restored {
				setRegs(t.TID, &saved)
			}
		}()
		// Enter, then exit, the injected call.
		for stops := 0; stops < 2; {
			if err := unix.PtraceSyscall(t.TID, 0); err != nil {
				return &Error{Op: "resume to syscall", TID: t.TID, Err: err}
			}
			if stops == 0 {
				faults.Point(FaultMidSyscall)
			}
			ws, err := p.wait(t)
			if err != nil {
				return err
			}
			switch kind, sig := stopKind(ws); kind {
			case stopSyscall:
				if hijack && stops == 0 {
					if err := p.hijackEntry(t, nr, args, &saved); err != nil {
						return &Error{Op: "set registers", TID: t.TID, Err: err}
					}
					faults.Point(FaultSyscallEntered)
				}
				stops++
				if err := syscallStop(t.TID, stops == 1, nr, &saved); err != nil {
					return &Error{Op: "syscall stop", TID: t.TID, Err: err}
				}
			case stopSignal:
				// A signal queued while the thread was stopped, dequeued
				// before the call could start. Deliver it to the thread's
				// own context, then inject again from where that leaves it.
				if err := setRegs(t.TID, &saved); err != nil {
					return &Error{Op: "restore registers", TID: t.TID, Err: err}
				}
				t.pendingSignal = sig
				if err := p.settle(t); err != nil {
					return err
				}
				if err := inject(); err != nil {
					return err
				}
			}
		}
		var out Regs
		if err := getRegs(t.TID, &out); err != nil {
			return &Error{Op: "read registers", TID: t.TID, Err: err}
		}
		ret = out.syscallResult()
		if err := setRegs(t.TID, &saved); err != nil {
			return &Error{Op: "restore registers", TID: t.TID, Err: err}
		}
		restored = true
		t.Regs = saved // syscallStop may have changed how the thread resumes
		// At the syscall exit, past the entry that discarded it: a signal
		// delivered while parking saves the thread's own state.
		if err := restoreVectorState(t.TID, vector); err != nil {
			return &Error{Op: "restore registers", TID: t.TID, Err: err}
		}
		return p.park(t)
	})
	return ret, err
}

// wait waits for t's next stop.
func (p *Process) wait(t *Thread) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(t.TID, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, &Error{Op: "wait", TID: t.TID, Err: err}
		}
		if ws.Exited() || ws.Signaled() {
			delete(p.stopped, t.TID)
			return ws, &Error{Op: "wait", TID: t.TID, Err: ErrThreadGone}
		}
		if ws.Stopped() {
			return ws, nil
		}
	}
}
