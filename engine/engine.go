package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/consistency"
	"github.com/hotpatch/hotpatch/proc"
	"github.com/hotpatch/hotpatch/target"
)

var (
	// ErrHashMismatch means a function's running bytes differ from the
	// bytes the patch was made for.
	ErrHashMismatch = errors.New("running code differs from the patch's base")
	// ErrBuildIDMismatch means the process does not map the patch's target.
	ErrBuildIDMismatch = target.ErrImageNotFound
	// ErrNotFunction means a replaced symbol is not a plain function.
	ErrNotFunction = errors.New("not a replaceable function")
	// ErrEntryUnsafe means --consistency=entry cannot patch a function: it
	// branches back into the bytes its jump overwrites.
	ErrEntryUnsafe = errors.New("entry consistency is unsafe for this function; use strict")
	// ErrNoRoom means a function is too small to hold a jump.
	ErrNoRoom = errors.New("no room for a jump")
	// ErrNoSpace means no free address range lies near the target image.
	ErrNoSpace = errors.New("no free memory near the target image")
	// ErrNotApplied means the patch id is not applied in the process.
	ErrNotApplied = errors.New("patch not applied")
	// ErrStacked means a newer patch sits on top of this one.
	ErrStacked = errors.New("a newer patch is applied over this one")
	// ErrBusy is returned when threads stayed inside the functions until the timeout.
	ErrBusy = consistency.ErrBusy
	// ErrLocked means another hotpatch is working on the process.
	ErrLocked = errors.New("another hotpatch is operating on this process")
	// ErrUnsigned means the patch carries no trusted signature.
	ErrUnsigned = errors.New("patch is not signed")
)

// FunctionError names the function a check failed for.
type FunctionError struct {
	Function string
	Err      error
	Detail   string
}

func (e *FunctionError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%s: %v: %s", e.Function, e.Err, e.Detail)
	}
	return fmt.Sprintf("%s: %v", e.Function, e.Err)
}

func (e *FunctionError) Unwrap() error { return e.Err }

// lock serialises engines working on one process, so two applies never
// interleave their switches.
func lock(pid int) (func(), error) {
	dir := "/run/hotpatch"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		dir = os.TempDir()
	}
	f, err := os.OpenFile(filepath.Join(dir, "pid-"+strconv.Itoa(pid)+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("pid %d: %w", pid, ErrLocked)
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// session is one open target with what every operation needs.
type session struct {
	pid    int
	arch   *arch.Arch
	p      *proc.Process
	maps   []target.Mapping
	images []*target.Image
	// lastCheck is the most recent consistency result, for reporting.
	lastCheck consistency.Result
	// limit bounds the waits of one operation (Options.Timeout).
	limit time.Duration
	// seccompChecked are the threads whose seccomp filters were found to
	// let the engine's system calls through.
	seccompChecked map[int]bool
}

func open(pid int) (*session, error) {
	s, err := openMaps(pid)
	if err != nil {
		return nil, err
	}
	if s.images, err = target.Images(pid, s.maps); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// openMaps opens pid without reading its ELF images: enough for status,
// which reads only the maps and the process's memory.
func openMaps(pid int) (*session, error) {
	maps, err := target.ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	a, err := hostArch()
	if err != nil {
		return nil, err
	}
	p, err := proc.Open(pid)
	if err != nil {
		return nil, err
	}
	return &session{pid: pid, arch: a, p: p, maps: maps}, nil
}

func (s *session) close() { s.p.Close() }

// remote runs fn with one thread stopped for remote system calls.
func (s *session) remote(fn func(t *proc.Thread) error) error {
	if s.p.SyscallInsn == 0 {
		addr, err := target.FindAlignedInsn(s.p, s.images, s.arch.SyscallInsn, uint64(s.arch.InsnAlign))
		if err != nil {
			return err
		}
		s.p.SyscallInsn = addr
		if len(proc.LandingSyscallRet) > 0 {
			// With both sequences an injected call survives the engine's
			// death; without them it is still correct, only not that.
			align := uint64(s.arch.InsnAlign)
			ret, err1 := target.FindAlignedInsn(s.p, s.images, proc.LandingSyscallRet, align)
			rt, err2 := target.FindAlignedInsn(s.p, s.images, proc.LandingRestoreRT, align)
			if err2 != nil {
				// arm64's C library returns from signals through the vDSO.
				rt, err2 = s.p.FindInVDSO(proc.LandingRestoreRT, align)
			}
			if err1 == nil && err2 == nil {
				s.p.Landing = &proc.Landing{SyscallRet: ret, RestoreRT: rt}
			}
		}
	}
	t, err := s.stopOne()
	if err != nil {
		return err
	}
	defer s.p.Resume(t)
	if err := s.checkSeccomp(t); err != nil {
		return err
	}
	return fn(t)
}

// stopOne stops one thread, for remote system calls. A thread that cannot
// stop now (one in an uninterruptible sleep) is passed over; when none
// can, it tries again with a backoff until the session's time limit.
func (s *session) stopOne() (*proc.Thread, error) {
	limit := Options{Timeout: s.limit}.timeout()
	deadline := time.Now().Add(limit)
	backoff := time.Millisecond
	for {
		tids, err := s.p.Threads()
		if err != nil {
			return nil, err
		}
		var last error
		for _, tid := range tids {
			t, err := s.p.StopThread(tid)
			if err == nil {
				return t, nil
			}
			if !errors.Is(err, proc.ErrThreadGone) && !errors.Is(err, proc.ErrStopTimeout) {
				return nil, err
			}
			last = err
		}
		if time.Now().Add(backoff).After(deadline) {
			return nil, fmt.Errorf("no thread could be stopped in %v: %w", limit, last)
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

func (s *session) syscall(t *proc.Thread, nr uint64, args ...uint64) (uint64, error) {
	ret, err := s.p.Syscall(t, nr, args...)
	if err != nil {
		return 0, err
	}
	if int64(ret) < 0 && int64(ret) > -4096 {
		return 0, unix.Errno(-int64(ret))
	}
	return ret, nil
}

// munmap removes a patch mapping with one thread stopped.
func (s *session) munmap(addr, size uint64) error {
	return s.remote(func(t *proc.Thread) error {
		_, err := s.syscall(t, s.arch.SysMunmap, addr, size)
		return err
	})
}
