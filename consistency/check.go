package consistency

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// MaxFrames bounds precise unwinding of one thread; deeper stacks are
// scanned conservatively from there.
const MaxFrames = 1024

// ErrBusy is matched (errors.Is) by *BusyError.
var ErrBusy = errors.New("thread inside a function being replaced")

// Range is a half-open address range [Lo, Hi) in the target; Name labels
// it in messages (usually the function name).
type Range struct {
	Lo, Hi uint64
	Name   string
}

// Thread is one stopped thread's state.
type Thread struct {
	TID int
	// Regs holds register values indexed by DWARF number (as far as the
	// slice goes, up to Arch.NumRegs). PC and SP below take precedence.
	Regs []uint64
	PC   uint64
	SP   uint64
	// StackLo and StackHi bound the mapping holding SP (adjacent mappings
	// of one stack merged). Nothing outside is read.
	StackLo, StackHi uint64
	// StackOf, when set, returns the bounds of the mapping holding addr
	// (zeros if none): unwinding then follows a signal frame onto the
	// stack its handler interrupted, from an alternate signal stack.
	StackOf func(addr uint64) (lo, hi uint64)
}

// maxStackSwitches bounds the stacks one thread's unwinding visits: an
// alternate signal stack, the stack its handler interrupted, and one more.
const maxStackSwitches = 2

// Busy is one reason a thread is not safe.
type Busy struct {
	TID   int
	Range Range
	// Frame is the frame index (0 = innermost) of the hit; for a
	// conservative hit, the frame where precise unwinding stopped.
	Frame int
	// Addr is the PC, return address or stack word found in Range.
	Addr uint64
	// StackAddr is where a conservative scan found Addr (0 otherwise).
	StackAddr uint64
	// Precise is false when the hit comes from the conservative scan, from
	// the (possibly stale) link register, or from a possible system call
	// restart.
	Precise bool

	kind hitKind
}

type hitKind uint8

const (
	hitReturn  hitKind = iota // a return address
	hitPC                     // where the thread resumes
	hitLR                     // the link register
	hitRestart                // the system call instruction before the PC
	hitScan                   // a stack word found by the scan
)

func (b Busy) String() string {
	switch {
	case b.kind == hitPC:
		return fmt.Sprintf("thread %d is in %s (frame %d, pc %#x)", b.TID, b.Range.Name, b.Frame, b.Addr)
	case b.kind == hitLR:
		return fmt.Sprintf("thread %d may be in %s (link register %#x)", b.TID, b.Range.Name, b.Addr)
	case b.kind == hitRestart:
		return fmt.Sprintf("thread %d may be in %s (restarting the system call at %#x)", b.TID, b.Range.Name, b.Addr)
	case b.StackAddr == 0:
		return fmt.Sprintf("thread %d is in %s (frame %d, return address %#x)", b.TID, b.Range.Name, b.Frame, b.Addr)
	default:
		return fmt.Sprintf("thread %d may be in %s (stack word %#x at %#x, conservative scan from frame %d)",
			b.TID, b.Range.Name, b.Addr, b.StackAddr, b.Frame)
	}
}

// BusyError reports the threads that prevent replacing the functions now.
type BusyError struct {
	Busy []Busy
}

func (e *BusyError) Error() string {
	var sb strings.Builder
	sb.WriteString(ErrBusy.Error())
	for i, b := range e.Busy {
		if i == 8 {
			fmt.Fprintf(&sb, "; and %d more", len(e.Busy)-i)
			break
		}
		sb.WriteString("; ")
		sb.WriteString(b.String())
	}
	return sb.String()
}

// Is makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// ThreadError is a thread Check could not examine, neither precisely nor
// by scanning; it must be treated as busy. Such states are usually
// transient (e.g. a signal handler on an alternate stack), so retrying
// later may succeed.
type ThreadError struct {
	TID int
	Err error
}

func (e *ThreadError) Error() string { return fmt.Sprintf("thread %d: %v", e.TID, e.Err) }

func (e *ThreadError) Unwrap() error { return e.Err }

// Result is the outcome of Check.
type Result struct {
	Busy []Busy
	// Frames counts frames unwound precisely, over all threads.
	Frames int
	// Fallbacks counts threads that needed a conservative scan.
	Fallbacks int
}

// Err returns a *BusyError when some thread is busy, else nil.
func (r Result) Err() error {
	if len(r.Busy) == 0 {
		return nil
	}
	return &BusyError{Busy: r.Busy}
}

// Check reports every thread whose PC or stack refers to one of ranges.
// Threads must be stopped. A thread is only found safe when its stack was
// unwound precisely to its end or scanned conservatively; if neither is
// possible Check returns an error, which must be treated as busy.
func Check(arch *Arch, mods *Modules, mem Memory, threads []Thread, ranges []Range) (Result, error) {
	if arch == nil || (arch.PtrSize != 4 && arch.PtrSize != 8) || arch.NumRegs <= 0 || arch.NumRegs > MaxRegs {
		return Result{}, errors.New("consistency: invalid Arch")
	}
	if mem == nil {
		return Result{}, errors.New("consistency: no Memory")
	}
	for _, m := range mods.Modules() {
		if m.machine != arch.Machine {
			return Result{}, fmt.Errorf("consistency: module %s is %v, not %s", m.name, m.machine, arch.Name)
		}
	}
	rs, err := newRangeSet(ranges)
	if err != nil {
		return Result{}, err
	}
	var res Result
	if len(rs.r) == 0 {
		return res, nil
	}
	w := walkers.Get().(*walker)
	defer walkers.Put(w)
	w.arch, w.mods, w.rs = arch, mods, rs
	w.seen = append(w.seen[:0], make([]int8, len(rs.r))...)
	var errs []error
	for i := range threads {
		if err := w.thread(&threads[i], mem, &res); err != nil {
			errs = append(errs, &ThreadError{TID: threads[i].TID, Err: err})
		}
	}
	return res, errors.Join(errs...)
}

// rangeSet finds the range holding an address by binary search.
type rangeSet struct {
	r     []Range  // sorted by Lo
	maxHi []uint64 // maxHi[i] = max(r[0..i].Hi), for overlapping ranges
}

func newRangeSet(ranges []Range) (*rangeSet, error) {
	s := &rangeSet{}
	for _, r := range ranges {
		if r.Hi < r.Lo {
			return nil, fmt.Errorf("consistency: range %s [%#x, %#x) is inverted", r.Name, r.Lo, r.Hi)
		}
		if r.Hi > r.Lo {
			s.r = append(s.r, r)
		}
	}
	sort.Slice(s.r, func(i, j int) bool { return s.r[i].Lo < s.r[j].Lo })
	s.maxHi = make([]uint64, len(s.r))
	var m uint64
	for i, r := range s.r {
		m = max(m, r.Hi)
		s.maxHi[i] = m
	}
	return s, nil
}

// find returns the index of a range holding addr, or -1.
func (s *rangeSet) find(addr uint64) int {
	i := sort.Search(len(s.r), func(i int) bool { return s.r[i].Lo > addr }) - 1
	for ; i >= 0 && s.maxHi[i] > addr; i-- {
		if addr < s.r[i].Hi {
			return i
		}
	}
	return -1
}

// findRet tests a return address. The caller frame lies inside a function
// if ra-1 does (the call may be its last instruction), and the thread will
// execute the bytes at ra when it returns, so either one counts.
func (s *rangeSet) findRet(ra uint64) int {
	if i := s.find(ra); i >= 0 {
		return i
	}
	return s.find(ra - 1)
}

// walker unwinds threads one after another, reusing its buffers.
type walker struct {
	arch  *Arch
	mods  *Modules
	rs    *rangeSet
	stack stackCache
	seen  []int8 // per range for the current thread: 0 none, 1 imprecise, 2 precise
	hits  []Busy
}

// walkers keeps stack buffers across calls; Check runs while the target
// is stopped, so it should not wait for fresh memory.
var walkers = sync.Pool{New: func() any { return new(walker) }}

type regSet struct {
	v     [MaxRegs]uint64
	valid uint64
}

func (r *regSet) get(n uint64) (uint64, bool) {
	if n >= MaxRegs || r.valid&(1<<n) == 0 {
		return 0, false
	}
	return r.v[n], true
}

func (r *regSet) set(n, v uint64) {
	if n < MaxRegs {
		r.v[n] = v
		r.valid |= 1 << n
	}
}

func (w *walker) hit(b Busy, idx int) {
	switch {
	case w.seen[idx] == 2, w.seen[idx] == 1 && !b.Precise:
		return
	case w.seen[idx] == 1:
		for i := range w.hits {
			if w.hits[i].Range == w.rs.r[idx] && w.hits[i].TID == b.TID {
				w.hits[i] = b
			}
		}
	default:
		w.hits = append(w.hits, b)
	}
	if b.Precise {
		w.seen[idx] = 2
	} else {
		w.seen[idx] = 1
	}
}

func (w *walker) thread(t *Thread, mem Memory, res *Result) error {
	a := w.arch
	if t.StackHi <= t.StackLo || t.SP < t.StackLo || t.SP >= t.StackHi {
		return fmt.Errorf("SP %#x outside the stack bounds [%#x, %#x)", t.SP, t.StackLo, t.StackHi)
	}
	clear(w.seen)
	w.hits = w.hits[:0]
	defer func() { res.Busy = append(res.Busy, w.hits...) }()
	w.stack.reset(mem, t.StackLo, t.StackHi, a.PtrSize)
	// One bulk read from SP up usually covers the whole unwind; a failure
	// here shows up again at the first word actually needed.
	_ = w.stack.ensure(t.SP&^uint64(a.PtrSize-1), t.SP&^uint64(a.PtrSize-1)+uint64(a.PtrSize))

	var regs regSet
	for i, v := range t.Regs {
		if i >= a.NumRegs {
			break
		}
		regs.set(uint64(i), v)
	}
	regs.set(a.SP, t.SP)

	pc, sp := t.PC, t.SP
	interrupted := true // the top frame's PC is exact, like after a signal
	switches := 0
	for frame := 0; ; frame++ {
		if interrupted {
			if i := w.rs.find(pc); i >= 0 {
				w.hit(Busy{TID: t.TID, Range: w.rs.r[i], Frame: frame, Addr: pc, Precise: true, kind: hitPC}, i)
			}
			// A thread stopped in a restartable system call resumes at
			// the system call instruction, before the PC.
			if frame == 0 && a.SyscallLen > 0 {
				if i := w.rs.find(pc - a.SyscallLen); i >= 0 {
					w.hit(Busy{TID: t.TID, Range: w.rs.r[i], Frame: 0, Addr: pc - a.SyscallLen, kind: hitRestart}, i)
				}
			}
			if a.LinkReg {
				lr, ok := regs.get(a.LinkRegNum)
				lr = a.codeAddr(lr)
				if !ok {
					return fmt.Errorf("frame %d: link register value unknown", frame)
				}
				if i := w.rs.findRet(lr); i >= 0 {
					w.hit(Busy{TID: t.TID, Range: w.rs.r[i], Frame: frame + 1, Addr: lr, kind: hitLR}, i)
				}
			}
		} else if i := w.rs.findRet(pc); i >= 0 {
			w.hit(Busy{TID: t.TID, Range: w.rs.r[i], Frame: frame, Addr: pc, Precise: true}, i)
		}
		if frame >= MaxFrames {
			return w.scan(t, sp, frame, res, fmt.Errorf("more than %d frames", MaxFrames))
		}
		res.Frames++
		lookup := pc
		if !interrupted {
			lookup = pc - 1 // the call may end its function
		}
		st, err := w.step(&regs, pc, lookup, sp, interrupted)
		if err != nil {
			if st.signal {
				// The interrupted context may be on another stack (an
				// alternate signal stack); a scan of this one proves nothing.
				return fmt.Errorf("frame %d: signal frame: %w", frame, err)
			}
			return w.scan(t, sp, frame, res, err)
		}
		if st.end {
			return nil
		}
		newSP, _ := regs.get(a.SP)
		if st.otherStack {
			// A handler on an alternate signal stack: the interrupted
			// context is on the thread's own stack (or another).
			var lo, hi uint64
			if t.StackOf != nil && switches < maxStackSwitches {
				lo, hi = t.StackOf(newSP)
			}
			if hi <= lo || newSP < lo || newSP >= hi {
				return fmt.Errorf("frame %d: signal frame: the interrupted context's SP %#x is on no stack known: %w", frame, newSP, errOutsideStack)
			}
			switches++
			w.stack.reset(mem, lo, hi, a.PtrSize)
		}
		pc, sp, interrupted = st.ra, newSP, st.signal
	}
}

type stepResult struct {
	ra         uint64
	end        bool // the CFI marks the outermost frame
	signal     bool // a signal frame: the caller was interrupted
	otherStack bool // ... and its context is on another stack
}

// step unwinds one frame in place: regs becomes the caller's registers.
// pc is the frame's PC, lookup the address used to find its CFI row;
// interrupted is set for the top frame and frames a signal interrupted.
func (w *walker) step(regs *regSet, pc, lookup, sp uint64, interrupted bool) (st stepResult, err error) {
	a := w.arch
	m := w.mods.Lookup(lookup)
	var r *row
	if m != nil {
		r = m.row(lookup)
	}
	if a.SigFrame != nil && (m == nil || r.err != nil || r.signal) && w.inTrampoline(pc, interrupted) {
		return w.sigFrame(regs, sp)
	}
	if m == nil {
		return st, fmt.Errorf("pc %#x: no module: %w", pc, ErrNoCFI)
	}
	if r.err != nil {
		return st, r.err
	}
	st.signal = r.signal
	if r.raReg != a.RA {
		return st, fmt.Errorf("pc %#x: return address column %d, want %d", pc, r.raReg, a.RA)
	}
	if !r.cfaOK {
		return st, fmt.Errorf("pc %#x: CFA rule not supported", pc)
	}
	// reg reads a register of this frame in expressions; the return
	// address column stands for the PC where it is not a real register.
	reg := func(n uint64) (uint64, bool) {
		if n == a.RA && !a.raIsRegister() {
			return pc, true
		}
		if n >= uint64(a.NumRegs) {
			return 0, false
		}
		return regs.get(n)
	}
	var cfa uint64
	if r.cfaIsExpr {
		cfa, err = evalExpr(r.cfaExpr, nil, reg, w.stack.word)
		if err != nil {
			return st, fmt.Errorf("pc %#x: CFA: %w", pc, err)
		}
	} else {
		base, ok := regs.get(r.cfaReg)
		if !ok {
			return st, fmt.Errorf("pc %#x: CFA register %d unknown", pc, r.cfaReg)
		}
		cfa = base + uint64(r.cfaOff)
	}

	eval := func(rr regRule) (uint64, bool, error) {
		switch rr.kind {
		case ruleUnspecified, ruleSame:
			v, ok := regs.get(rr.reg)
			return v, ok, nil
		case ruleUndefined:
			return 0, false, nil
		case ruleOffset:
			v, err := w.stack.word(cfa + uint64(rr.off))
			return v, err == nil, err
		case ruleValOffset:
			return cfa + uint64(rr.off), true, nil
		case ruleRegister:
			v, ok := regs.get(rr.src)
			return v, ok, nil
		case ruleExpr, ruleValExpr:
			v, err := evalExpr(rr.expr, &cfa, reg, w.stack.word)
			if err != nil {
				return 0, false, fmt.Errorf("pc %#x: register %d: %w", pc, rr.reg, err)
			}
			if rr.kind == ruleExpr {
				v, err = w.stack.word(v)
			}
			return v, err == nil, err
		}
		return 0, false, fmt.Errorf("pc %#x: rule for register %d not supported", pc, rr.reg)
	}

	switch r.ra.kind {
	case ruleUndefined:
		st.end = true // _start, a thread's entry: the outermost frame
		return st, nil
	case ruleUnspecified, ruleSame:
		// Only meaningful where the column is a real register (LR).
		if !a.raIsRegister() || (r.ra.kind == ruleUnspecified && !a.LinkReg) {
			return st, fmt.Errorf("pc %#x: no rule for the return address", pc)
		}
	}
	ra, ok, err := eval(r.ra)
	if err != nil {
		return st, err
	}
	if !ok {
		return st, fmt.Errorf("pc %#x: return address unknown", pc)
	}
	if ra == 0 {
		return st, fmt.Errorf("pc %#x: return address 0 without an end marker", pc)
	}
	st.ra = a.codeAddr(ra)

	// The caller's registers: callee-saved ones keep their value unless a
	// rule says otherwise, all others (LR included) are unknown; SP
	// becomes the CFA.
	var next regSet
	next.valid = regs.valid & a.CalleeSaved
	next.v = regs.v
	next.set(a.SP, cfa)
	for _, rr := range r.regs {
		if rr.reg >= uint64(a.NumRegs) {
			continue
		}
		v, ok, err := eval(rr)
		if err != nil {
			if rr.kind == ruleCannot {
				ok = false
			} else {
				return st, err
			}
		}
		next.valid &^= 1 << rr.reg
		if ok {
			next.set(rr.reg, v)
		}
	}

	newSP, ok := next.get(a.SP)
	switch {
	case !ok:
		return st, fmt.Errorf("pc %#x: caller SP unknown", pc)
	case st.signal && (newSP < w.stack.lo || newSP >= w.stack.hi):
		st.otherStack = true
	case newSP < sp, newSP == sp && !(interrupted && a.LinkReg):
		// The stack only grows down; no progress means a loop, or for a
		// signal frame a context on another stack. Only a frame that was
		// not calling (LR still live) may have no frame of its own.
		return st, fmt.Errorf("pc %#x: caller SP %#x not above SP %#x", pc, newSP, sp)
	case newSP >= w.stack.hi:
		return st, fmt.Errorf("pc %#x: caller SP %#x: %w", pc, newSP, errOutsideStack)
	}
	*regs = next
	return st, nil
}

// inTrampoline reports whether pc is the architecture's signal trampoline,
// read from the process (the vDSO's code is not in any file). A return
// address is its start; an interrupted PC (a thread stopped there after
// its handler returned, or a signal that arrived then) may be at any of
// its instructions, with SP still at the signal frame.
func (w *walker) inTrampoline(pc uint64, interrupted bool) bool {
	code := w.arch.SigFrame.Trampoline
	buf := make([]byte, len(code))
	for off := 0; off < len(code); off += max(w.arch.SigFrame.InsnAlign, 1) {
		n, err := w.stack.mem.ReadAt(buf, pc-uint64(off))
		if err == nil && n == len(buf) && bytes.Equal(buf, code) {
			return true
		}
		if !interrupted {
			break
		}
	}
	return false
}

// sigFrame unwinds a signal handler's return into its trampoline: the
// interrupted context, every register and the exact PC, is read from the
// signal frame at sp.
func (w *walker) sigFrame(regs *regSet, sp uint64) (st stepResult, err error) {
	a, sf := w.arch, w.arch.SigFrame
	var next regSet
	for i := 0; i < sf.NumRegs && i < a.NumRegs; i++ {
		v, err := w.stack.word(sp + sf.Regs + uint64(i*a.PtrSize))
		if err != nil {
			return st, fmt.Errorf("signal frame at %#x: %w", sp, err)
		}
		next.set(uint64(i), v)
	}
	newSP, err := w.stack.word(sp + sf.SP)
	if err != nil {
		return st, fmt.Errorf("signal frame at %#x: %w", sp, err)
	}
	pc, err := w.stack.word(sp + sf.PC)
	if err != nil {
		return st, fmt.Errorf("signal frame at %#x: %w", sp, err)
	}
	next.set(a.SP, newSP)
	*regs = next
	st.ra, st.signal = a.codeAddr(pc), true
	st.otherStack = newSP < w.stack.lo || newSP >= w.stack.hi
	return st, nil
}

// scan is the conservative fallback: every aligned word from sp to the top
// of the stack mapping is taken as a possible return address. why is the
// unwinding error, returned if the stack cannot be read either.
func (w *walker) scan(t *Thread, sp uint64, frame int, res *Result, why error) error {
	res.Fallbacks++
	n := uint64(w.arch.PtrSize)
	start := (sp + n - 1) &^ (n - 1)
	lo, hi := w.stack.lo, w.stack.hi // the stack unwinding reached
	if start < lo || start >= hi {
		return fmt.Errorf("cannot scan from %#x after unwinding failed (%v): %w", sp, why, errOutsideStack)
	}
	end := hi &^ (n - 1)
	if err := w.stack.ensure(start, end); err != nil {
		return fmt.Errorf("unwinding failed (%v) and the stack cannot be scanned: %w", why, err)
	}
	buf := w.stack.buf[start-w.stack.base : end-w.stack.base]
	for off := 0; off+int(n) <= len(buf); off += int(n) {
		v := w.arch.codeAddr(w.stack.load(buf[off:]))
		if v < w.rs.r[0].Lo || v > w.rs.maxHi[len(w.rs.maxHi)-1] {
			continue // fast reject: below or above every range
		}
		if i := w.rs.findRet(v); i >= 0 {
			w.hit(Busy{TID: t.TID, Range: w.rs.r[i], Frame: frame, Addr: v, StackAddr: start + uint64(off), kind: hitScan}, i)
		}
	}
	return nil
}
