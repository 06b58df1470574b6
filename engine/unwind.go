package engine

import (
	"debug/elf"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/cpu"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/consistency"
	"github.com/hotpatch/hotpatch/link"
	"github.com/hotpatch/hotpatch/proc"
	"github.com/hotpatch/hotpatch/target"
)

// Unwind-table registration. The patch's code lives in anonymous memory
// that no unwinder knows, so an exception (or pthread_cancel, or a
// backtrace) passing through it would end there: a C++ program calls
// std::terminate. When the target has libgcc's unwinder, the engine calls
// its __register_frame_info on the patch's .eh_frame, with the object
// storage in patch memory so nothing is allocated, and its
// __deregister_frame_info before the memory is unmapped.
//
// The call runs in one stopped thread through a stub in patch memory
// (arch.Arch.CallStub). The stub records completion itself and, should the
// engine die mid-call, restores the thread's own context by itself, so the
// target never needs the engine to come back. The thread is chosen so that
// it holds none of the locks the call takes: none of its frames may be in
// the unwinder or the allocator.

// errNotOnThreadStack: a thread running on some other stack is not used
// for a remote call.
var errNotOnThreadStack = errors.New("not on its thread stack")

// ErrUnwindRegistration means the patch's unwind tables could not be
// registered or deregistered in the target.
var ErrUnwindRegistration = errors.New("cannot register the patch's unwind tables")

// Layout of the call data, in the linker's reserved writable space. The
// header is the same on every architecture; the rest follows the
// architecture's call stub (callLayoutFor). Both are fixed: a later engine
// writes into the data of a stub an earlier one left in the target.
const (
	callFuncOff   = 144             // u64 the function to call
	callDoneOff   = callFuncOff + 8 // 152, the done flag
	callObjectOff = 192             // struct object, 56 bytes in libgcc
	callAreaOff   = 320             // 64-aligned: the stub's own data
	callStackSize = 64 << 10        // room for signal handlers too
	callTimeout   = 2 * time.Second
	// callInFlight in the done flag: a call timed out and still runs in the
	// patch memory. The stub overwrites it when the call returns; until
	// then the memory must stay and no other call may be made on it.
	callInFlight = 2
)

// callLayout places one architecture's call data: the thread's saved
// context (arch.CallFrame.Saved), the FPU area, the stack.
type callLayout struct {
	abi                     *arch.CallABI
	saved, fpu, stack, size uint64
	stub                    uint64 // room for one stub
}

// callLayoutFor lays out the call data for abi. x86-64 keeps its 144-byte
// context at 0, its 1024-byte FPU area at 320 and its stack at 1344;
// arm64's 4688-byte signal frame goes at 320 (it holds the FP/SIMD state),
// its stack at 5056.
func callLayoutFor(abi *arch.CallABI) callLayout {
	l := callLayout{abi: abi, fpu: callAreaOff}
	if abi == nil {
		return l
	}
	off := uint64(callAreaOff + abi.FPUSize)
	if abi.SavedSize > callFuncOff {
		l.saved = off
		off += uint64(abi.SavedSize)
	}
	l.stack = (off + 63) &^ 63
	l.size = l.stack + callStackSize
	l.stub = uint64(abi.StubLen)
	return l
}

// hostCall is the call data of the engine's own architecture, the only one
// it ever patches.
var hostCall = func() callLayout {
	a, err := hostArch()
	if err != nil {
		return callLayout{}
	}
	return callLayoutFor(a.CallStub())
}()

var (
	callStubSize = hostCall.stub
	callDataSize = hostCall.size
)

// unwinder is libgcc's frame registry in the target.
type unwinder struct {
	register, deregister uint64
	// busy are the code ranges whose frames mean a thread may hold a lock
	// the registry takes: the unwinder itself and the allocator.
	busy []consistency.Range
}

// findUnwinder looks for libgcc's registry: in libgcc_s, or linked into
// the executable (-static-libgcc). It returns nil when there is none, the
// common case for C programs, after loading at most those two images'
// symbols.
func (s *session) findUnwinder() (*unwinder, error) {
	u := &unwinder{}
	var home *target.Image
	var homeSyms *target.Symbols
	for _, img := range s.images {
		if !img.Main && !strings.HasPrefix(filepath.Base(img.Path), "libgcc_s.") {
			continue
		}
		syms, err := target.LoadSymbols(img.File, img.Path)
		if err != nil {
			continue
		}
		reg, ok1 := lookupFunc(syms, "__register_frame_info")
		dereg, ok2 := lookupFunc(syms, "__deregister_frame_info")
		if ok1 && ok2 {
			u.register, u.deregister = img.Bias+reg.Value, img.Bias+dereg.Value
			home, homeSyms = img, syms
			break
		}
	}
	if home == nil {
		return nil, nil
	}
	// The calling thread must hold none of the registry's or the
	// allocator's locks: any frame in them makes a thread unsuitable.
	for _, m := range home.Maps {
		if m.Exec() && !home.Main {
			u.busy = append(u.busy, consistency.Range{Lo: m.Start, Hi: m.End, Name: filepath.Base(home.Path)})
		}
	}
	u.busy = append(u.busy, funcRanges(home, homeSyms, func(n string) bool {
		return strings.HasPrefix(n, "_Unwind_") || strings.Contains(n, "register_frame")
	})...)
	for _, img := range s.images {
		if !strings.HasPrefix(filepath.Base(img.Path), "libc.so") && !img.Main {
			continue
		}
		if syms, err := target.LoadSymbols(img.File, img.Path); err == nil {
			u.busy = append(u.busy, funcRanges(img, syms, func(n string) bool { return allocator[n] })...)
		}
	}
	return u, nil
}

func lookupFunc(syms *target.Symbols, name string) (target.Symbol, bool) {
	if sym, ok := syms.LookupDynamic(name); ok {
		return sym, true
	}
	if sym, err := syms.Lookup(name, ""); err == nil && sym.Type == elf.STT_FUNC {
		return sym, true
	}
	return target.Symbol{}, false
}

// funcRanges returns the address ranges of img's functions whose names match.
func funcRanges(img *target.Image, syms *target.Symbols, match func(string) bool) []consistency.Range {
	var out []consistency.Range
	for _, sym := range syms.All {
		if sym.Type == elf.STT_FUNC && sym.Size > 0 && match(sym.Name) {
			out = append(out, consistency.Range{Lo: img.Bias + sym.Value, Hi: img.Bias + sym.Value + sym.Size, Name: sym.Name})
		}
	}
	return out
}

var allocator = map[string]bool{
	"malloc": true, "free": true, "calloc": true, "realloc": true, "reallocarray": true, "memalign": true,
	"posix_memalign": true, "aligned_alloc": true, "valloc": true, "pvalloc": true, "malloc_trim": true,
	"__libc_malloc": true, "__libc_free": true, "__libc_calloc": true, "__libc_realloc": true, "__libc_memalign": true,
	"_int_malloc": true, "_int_free": true, "_int_realloc": true, "_int_memalign": true, "malloc_consolidate": true,
}

// callFrame describes the call data at base for a call that sets the done
// flag to value.
func callFrame(base uint64, value byte) arch.CallFrame {
	return arch.CallFrame{Saved: base + hostCall.saved, Func: base + callFuncOff, Done: base + callDoneOff,
		Value: value, FPU: base + hostCall.fpu, XSave: cpu.X86.HasOSXSAVE}
}

// writeCallStubs puts the registration and deregistration stubs into the
// linked code at at, and returns where they and their markers are.
func writeCallStubs(linked *link.Linked, at, data uint64) (reg, regMarker, dereg, deregMarker uint64, err error) {
	if hostCall.abi == nil {
		return 0, 0, 0, 0, errors.New("no call stub on this architecture")
	}
	for i, value := range []byte{1, 0} {
		stub := at + uint64(i)*callStubSize
		code, marker, err := hostCall.abi.Encode(stub, callFrame(data, value))
		if err != nil {
			return 0, 0, 0, 0, err
		}
		dst := linked.Code(stub, uint64(len(code)))
		if dst == nil || uint64(len(code)) > callStubSize {
			return 0, 0, 0, 0, fmt.Errorf("call stub does not fit the patch's code")
		}
		copy(dst, code)
		if i == 0 {
			reg, regMarker = stub, stub+uint64(marker)
		} else {
			dereg, deregMarker = stub, stub+uint64(marker)
		}
	}
	return reg, regMarker, dereg, deregMarker, nil
}

// lockFreeThread stops threads one at a time until one has no frame in
// busy, and whose seccomp filter lets the call stub's system calls
// through, and returns it stopped.
func (s *session) lockFreeThread(mods *consistency.Modules, busy []consistency.Range, timeout time.Duration) (*proc.Thread, error) {
	deadline := time.Now().Add(timeout)
	// Threads whose filter refuses the stub: filters are only ever added,
	// so they stay refused.
	confined := map[int]error{}
	for {
		tids, err := s.p.Threads()
		if err != nil {
			return nil, err
		}
		maps, err := target.ReadMaps(s.pid)
		if err != nil {
			return nil, err
		}
		var refused error
		for _, tid := range tids {
			if err, ok := confined[tid]; ok {
				refused = err
				continue
			}
			t, err := s.p.StopThread(tid)
			if err != nil {
				continue
			}
			// The same check as before a switch: a frame in busy, or a stack
			// that cannot be examined, makes the thread unsuitable.
			inside, err := s.check([]*proc.Thread{t}, maps, mods, busy)
			if err == nil && inside == nil && !s.p.OnThreadStack(t) {
				// Perhaps in a handler on an alternate signal stack.
				inside = errNotOnThreadStack
			}
			if err == nil && inside == nil {
				err := s.checkStubSeccomp(t)
				if err == nil {
					return t, nil
				}
				confined[tid], refused = err, err
			}
			s.p.Resume(t)
		}
		if refused != nil && len(confined) == len(tids) {
			return nil, fmt.Errorf("%w: no thread's seccomp filter lets the call stub run: %w", ErrUnwindRegistration, refused)
		}
		if time.Now().After(deadline) {
			if refused != nil {
				return nil, fmt.Errorf("%w: every thread is inside the unwinder or the allocator, on a stack not its own, or its seccomp filter refuses the call stub: %w", ErrUnwindRegistration, refused)
			}
			return nil, fmt.Errorf("%w: every thread is inside the unwinder or the allocator, or on a stack not its own (a signal handler's)", ErrUnwindRegistration)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// remoteCall runs fn(args) in t through the stub at entry.
func (s *session) remoteCall(t *proc.Thread, data, fn, entry, marker uint64, args ...uint64) error {
	if hostCall.abi == nil {
		return fmt.Errorf("%w: remote calls are not supported on %s", ErrUnwindRegistration, s.arch.Name)
	}
	// The context the stub restores by itself should the engine die.
	ctx := t.Regs.CallContext()
	if len(ctx) != hostCall.abi.SavedSize {
		return fmt.Errorf("%w: saved context is %d bytes, want %d", ErrUnwindRegistration, len(ctx), hostCall.abi.SavedSize)
	}
	if _, err := s.p.WriteAt(ctx, data+hostCall.saved); err != nil {
		return err
	}
	if _, err := s.p.WriteAt(le64put(nil, fn), data+callFuncOff); err != nil {
		return err
	}
	sp := (data + hostCall.stack + callStackSize) &^ 15
	// Marked while the thread is still stopped: a call that then returns
	// overwrites the mark, so a finished call is never taken for a
	// running one.
	inFlight := func() { s.p.WriteAt([]byte{callInFlight}, data+callDoneOff) }
	return s.p.Call(t, entry, sp, marker, callTimeout, inFlight, args...)
}

func le64put(b []byte, v uint64) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}

// registered reports whether the record's unwind tables are registered:
// the stub itself set the done flag when the call returned.
func (s *session) registered(r *record) bool {
	if r.Unwind.EHFrame == 0 {
		return false
	}
	b := make([]byte, 1)
	_, err := s.p.ReadAt(b, r.Unwind.CallData+callDoneOff)
	return err != nil || b[0] != 0 // unreadable: assume registered, never unmap
}

func (s *session) readOK(b []byte, addr uint64) bool {
	_, err := s.p.ReadAt(b, addr)
	return err == nil
}

// deregister removes the record's unwind tables from the target's registry
// before its memory goes away. Unmapping registered tables would make the
// next exception anywhere in the process read freed memory.
func (s *session) deregister(r *record, mods *consistency.Modules) error {
	if !s.registered(r) {
		return nil
	}
	if b := make([]byte, 1); s.readOK(b, r.Unwind.CallData+callDoneOff) && b[0] == callInFlight {
		return fmt.Errorf("%w: an earlier call into the unwinder has not returned yet", ErrUnwindRegistration)
	}
	u, err := s.findUnwinder()
	if err != nil || u == nil {
		return fmt.Errorf("%w: the unwinder is gone from the process", ErrUnwindRegistration)
	}
	t, err := s.lockFreeThread(mods, u.busy, callTimeout)
	if err != nil {
		return err
	}
	defer s.p.Resume(t)
	if err := s.remoteCall(t, r.Unwind.CallData, r.Unwind.DeregFunc, r.Unwind.DeregStub, r.Unwind.DeregMarker, r.Unwind.EHFrame); err != nil {
		return fmt.Errorf("%w: %v", ErrUnwindRegistration, err)
	}
	if s.registered(r) {
		return fmt.Errorf("%w: deregistration did not complete", ErrUnwindRegistration)
	}
	return nil
}
