package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/consistency"
	"github.com/hotpatch/hotpatch/link"
	"github.com/hotpatch/hotpatch/patchfile"
	"github.com/hotpatch/hotpatch/proc"
	"github.com/hotpatch/hotpatch/target"
)

// Options tune Apply and Revert.
type Options struct {
	// Timeout bounds the wait for no thread to be inside the functions.
	Timeout time.Duration
	// Consistency is how strictly apply waits: ConsistencyStrict (the
	// default) or ConsistencyEntry.
	Consistency Consistency
}

// Consistency is an apply's switch condition.
type Consistency string

const (
	// ConsistencyStrict waits until no thread is inside a replaced function
	// or due to return into one: no old code runs after the switch.
	ConsistencyStrict Consistency = "strict"
	// ConsistencyEntry only waits until no thread is inside the bytes the
	// jumps overwrite. Calls made after the switch run the new code, while
	// threads already inside an old function (a loop that never returns,
	// say) finish it in the old code. Revert stays strict, since it unmaps
	// the new code.
	ConsistencyEntry Consistency = "entry"
)

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 10 * time.Second
	}
	return o.Timeout
}

// Function is one redirected function in a result.
type Function struct {
	Name    string
	Old     uint64
	New     uint64
	JumpLen int
	// Gated is true when the function switches with the patch's gate byte.
	Gated bool
	// Ungated says why a function could not be gated: it switches with its
	// own jump, so an engine dying mid-switch could leave it out.
	Ungated string
}

// Result reports an apply.
type Result struct {
	ID             string
	PID            int
	AlreadyApplied bool
	Base, Size     uint64
	Functions      []Function
	Imports        []link.Import
	// Attempts counts all-thread stops; more than one means threads were busy.
	Attempts int
	// Pause is how long every thread was stopped for the switch.
	Pause time.Duration
	// Total is the whole apply, from loading the target to the end.
	Total time.Duration
	// Threads is the number of threads stopped for the switch.
	Threads int
	// Phases splits Pause: stopping, checking, writing, resuming.
	Phases PausePhases
	// Frames counts stack frames unwound precisely in the final check;
	// Fallbacks counts threads whose stacks had to be scanned word by word
	// because their unwind information ran out (still safe, less precise).
	Frames, Fallbacks int
	// UnwindRegistered means the patch's unwind tables were registered with
	// the target's unwinder, so exceptions pass through the new code.
	UnwindRegistered bool
	// Completed means the patch was found half switched in by an engine
	// that died, and this apply finished it.
	Completed bool

	buildID string
}

// PausePhases splits a pause into its steps.
type PausePhases struct {
	Stop, Check, Write, Resume time.Duration
}

type plannedSite struct {
	fn      patchfile.Function
	addr    uint64
	room    uint64
	ranges  []consistency.Range
	newName string
	orig    []byte // the function's original bytes, as the patch was made for
}

// Apply puts a loaded, verified patch into process pid.
func Apply(ctx context.Context, pid int, spec *patchfile.Spec, opts Options) (*Result, error) {
	start := time.Now()
	if c := opts.Consistency; c != "" && c != ConsistencyStrict && c != ConsistencyEntry {
		return nil, fmt.Errorf("consistency %q: want %q or %q", c, ConsistencyStrict, ConsistencyEntry)
	}
	unlock, err := lock(pid)
	if err != nil {
		return nil, err
	}
	defer unlock()
	s, err := open(pid)
	if err != nil {
		return nil, err
	}
	defer s.close()
	s.limit = opts.timeout()
	res := &Result{ID: spec.Meta.ID, PID: pid, buildID: spec.Meta.TargetBuildID}

	if spec.Machine != s.arch.Machine {
		return nil, fmt.Errorf("patch is for %v but this host is %s", spec.Machine, s.arch.Name)
	}
	var img *target.Image
	for _, im := range s.images {
		if im.BuildID == spec.Meta.TargetBuildID {
			img = im
		}
	}
	if img == nil {
		return nil, fmt.Errorf("build-id %s (%s) in pid %d: %w; the process runs a different build", spec.Meta.TargetBuildID, spec.Meta.TargetPath, pid, ErrBuildIDMismatch)
	}
	records, err := s.records()
	if err != nil {
		return nil, err
	}
	var nextSeq uint64 = 1
	var partial *found
	for i, r := range records {
		if r.rec.ID == spec.Meta.ID {
			switch s.state(records, r.rec) {
			case "active":
				res.AlreadyApplied = true
				res.Base, res.Size = r.base, r.rec.Size
				return res, nil
			case "partial", "armed":
				partial = &records[i]
			}
		}
		nextSeq = max(nextSeq, r.rec.Seq+1)
	}
	syms, err := target.LoadSymbols(img.File, img.Path)
	if err != nil {
		return nil, err
	}

	// Check every function against the running code before anything else.
	sites := make([]plannedSite, 0, len(spec.Meta.Functions))
	for _, fn := range spec.Meta.Functions {
		ps, err := s.planSite(img, syms, fn, records)
		if err != nil {
			return nil, err
		}
		sites = append(sites, ps)
	}
	if partial != nil {
		// An earlier engine died while switching this patch in: its memory
		// is complete, so finish writing its jumps.
		return s.completeSwitch(ctx, partial, sites, res, opts, start)
	}
	stubLen := uint64(s.arch.MaxStubLen)
	// A patch with unwind tables needs them registered if the target has
	// an unwinder: reserve room for the call stubs and their data.
	var unw *unwinder
	if hasUnwindTables(spec) {
		if unw, err = s.findUnwinder(); err != nil {
			return nil, err
		}
		if unw != nil && s.arch.CallStub() == nil {
			return nil, fmt.Errorf("%w: the target has an unwinder, and remote calls into it are not implemented on %s; build the patch without unwind tables (-fno-asynchronous-unwind-tables -fno-exceptions) if no exception passes through it",
				ErrUnwindRegistration, s.arch.Name)
		}
	}
	var callText, callData uint64
	if unw != nil {
		callText, callData = 2*callStubSize, callDataSize
	}
	plan, err := link.NewPlan(spec, s.arch, recordSize(len(sites)), stubLen*uint64(len(sites))+callText, callData, s.resolver(img, syms))
	if err != nil {
		return nil, err
	}
	res.Imports = plan.Imports
	mods := s.cfiModules()
	// Every check passed: only now touch the process, first to clear what
	// an engine that died earlier left behind.
	if err := s.collectStale(records, mods); err != nil {
		return nil, err
	}

	// Phase 1: map, link, write and protect the patch with one thread stopped.
	var linked *link.Linked
	var regStub, regStubMarker uint64
	rec := &record{Phase: phasePrepared, Applied: time.Now().UnixNano(), Seq: nextSeq, ID: spec.Meta.ID,
		BuildID: spec.Meta.TargetBuildID, Bias: img.Bias}
	err = s.remote(func(t *proc.Thread) error {
		base, err := s.mapNear(t, img, plan.Size, plan.MaxEnd)
		if err != nil {
			return err
		}
		rec.Size = plan.Size
		fault(FaultAfterMap)
		fail := func(err error) error {
			s.syscall(t, s.arch.SysMunmap, base, plan.Size)
			return err
		}
		if linked, err = plan.Link(base); err != nil {
			return fail(err)
		}
		for _, seg := range linked.Segments {
			if seg.Name == "text" {
				rec.CodeOff, rec.CodeSize = seg.Off, uint64(len(seg.Data))
			}
		}
		for i, ps := range sites {
			newAddr, ok := linked.Symbols[ps.newName]
			if !ok {
				return fail(fmt.Errorf("new function %s not laid out", ps.newName))
			}
			st, err := s.makeSite(ps, newAddr, linked, linked.Reserved+uint64(i)*stubLen, base+gateOffset)
			if err != nil {
				return fail(err)
			}
			if !st.Gated && opts.Consistency == ConsistencyEntry {
				// Threads stay inside old functions in entry mode; one that
				// branches back into its overwritten bytes would land inside
				// the jump.
				return fail(&FunctionError{Function: ps.fn.Old, Err: ErrEntryUnsafe, Detail: st.directReason})
			}
			if i, ok := spec.SymbolByName(ps.newName); ok {
				st.NewSize = uint32(spec.Symbols[i].Size)
			}
			rec.Sites = append(rec.Sites, st)
			res.Functions = append(res.Functions, Function{Name: ps.fn.Old, Old: ps.addr, New: newAddr, JumpLen: len(st.Tramp), Gated: st.Gated, Ungated: st.directReason})
		}
		if unw != nil && linked.EHFrame != 0 {
			reg, regMarker, dereg, deregMarker, err := writeCallStubs(linked, linked.Reserved+stubLen*uint64(len(sites)), linked.ReservedData)
			if err != nil {
				return fail(err)
			}
			rec.Unwind = unwindRecord{EHFrame: linked.EHFrame, CallData: linked.ReservedData,
				DeregStub: dereg, DeregMarker: deregMarker, DeregFunc: unw.deregister}
			regStub, regStubMarker = reg, regMarker
		}
		if _, err := s.p.WriteAt(rec.encode(), base); err != nil {
			return fail(err)
		}
		for _, seg := range linked.Segments {
			if _, err := s.p.WriteAt(seg.Data, base+seg.Off); err != nil {
				return fail(err)
			}
		}
		// Name the mapping; kernels without CONFIG_ANON_VMA_NAME refuse, and
		// status then finds the record by its magic instead.
		s.syscall(t, s.arch.SysPrctl, unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, base, plan.Size, base+nameOffset)
		if _, err := s.syscall(t, s.arch.SysMprotect, base, link.Page*((recordSize(len(sites))+link.Page-1)/link.Page), unix.PROT_READ); err != nil {
			return fail(fmt.Errorf("protect state record: %w", err))
		}
		for _, seg := range linked.Segments {
			if _, err := s.syscall(t, s.arch.SysMprotect, base+seg.Off, uint64(len(seg.Data)), uint64(seg.Prot)); err != nil {
				return fail(fmt.Errorf("protect %s: %w", seg.Name, err))
			}
		}
		fault(FaultAfterWrite)
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Base, res.Size = linked.Base, linked.Size
	// unmap removes the patch memory after a failure, unregistering its
	// unwind tables first; if that fails the memory stays (safe, leaked).
	unmap := func() {
		if s.deregister(rec, mods) == nil {
			s.munmap(linked.Base, linked.Size)
		}
	}
	if rec.Unwind.EHFrame != 0 {
		t, err := s.lockFreeThread(mods, unw.busy, opts.timeout())
		if err != nil {
			s.munmap(linked.Base, linked.Size)
			return nil, err
		}
		err = s.remoteCall(t, rec.Unwind.CallData, unw.register, regStub, regStubMarker, rec.Unwind.EHFrame, rec.Unwind.CallData+callObjectOff)
		s.p.Resume(t)
		if err == nil && !s.registered(rec) {
			err = errors.New("registration did not complete")
		}
		if err != nil {
			// A timed-out call still runs on the stub and its stack in the
			// patch memory: leave it mapped (the next apply collects it).
			if !errors.Is(err, proc.ErrCallTimeout) {
				unmap()
			}
			return nil, fmt.Errorf("%w: %w", ErrUnwindRegistration, err)
		}
		res.UnwindRegistered = true
	}

	// Phase 2: stop everything, check, switch.
	var ranges []consistency.Range
	switch opts.Consistency {
	case ConsistencyEntry:
		for _, st := range rec.Sites {
			ranges = append(ranges, consistency.Range{Lo: st.Addr, Hi: st.Addr + uint64(len(st.Tramp)), Name: st.Name + " (entry)"})
		}
	default:
		for _, ps := range sites {
			ranges = append(ranges, ps.ranges...)
		}
	}
	s.warmUnwinder(mods, ranges)
	err = s.switchWhenIdle(ctx, opts.timeout(), mods, ranges, res, func() error {
		return s.writeSites(linked.Base, rec, false)
	})
	if err != nil {
		unmap()
		return nil, err
	}
	res.Total = time.Since(start)
	return res, nil
}

func (s *session) completeSwitch(ctx context.Context, r *found, sites []plannedSite, res *Result, opts Options, start time.Time) (*Result, error) {
	if r.rec.BuildID != res.buildID || len(r.rec.Sites) != len(sites) {
		return nil, fmt.Errorf("patch %s is partly applied with different contents; revert it first: %w", r.rec.ID, ErrBadState)
	}
	// The record comes from the target: its jumps go only where this patch
	// replaces functions, and only over the bytes it saved (a newer patch
	// stacked there meanwhile would be overwritten).
	for i, st := range r.rec.Sites {
		if st.Addr != sites[i].addr+uint64(s.keepEntry(sites[i].orig)) {
			return nil, fmt.Errorf("patch %s is partly applied with different contents; revert it first: %w", r.rec.ID, ErrBadState)
		}
		cur := make([]byte, len(st.Tramp))
		if _, err := s.p.ReadAt(cur, st.Addr); err != nil {
			return nil, err
		}
		if !bytes.Equal(cur, st.Tramp) && !bytes.Equal(cur, st.Orig) {
			return nil, fmt.Errorf("%s: %w; revert the newer patch first", r.rec.ID, ErrStacked)
		}
	}
	var ranges []consistency.Range
	for i, ps := range sites {
		st := r.rec.Sites[i]
		if opts.Consistency == ConsistencyEntry {
			// As for a fresh apply: only the bytes the jumps overwrite,
			// and no direct jump, which an old body may branch back into.
			if !st.Gated {
				return nil, &FunctionError{Function: ps.fn.Old, Err: ErrEntryUnsafe, Detail: "its site is ungated"}
			}
			ranges = append(ranges, consistency.Range{Lo: st.Addr, Hi: st.Addr + uint64(len(st.Tramp)), Name: st.Name + " (entry)"})
			continue
		}
		ranges = append(ranges, ps.ranges...)
		// The jumps are in place with the gate closed: a thread may be in
		// a stub, running the displaced instructions of the old version.
		if st.Gated {
			ranges = append(ranges, stubRange(s.arch, st, ps.fn.Old+" (stub of "+r.rec.ID+")")...)
		}
	}
	err := s.switchWhenIdle(ctx, opts.timeout(), s.cfiModules(), ranges, res, func() error {
		return s.writeSites(r.base, r.rec, false)
	})
	if err != nil {
		return nil, err
	}
	res.Completed = true
	res.Base, res.Size = r.base, r.rec.Size
	for _, st := range r.rec.Sites {
		res.Functions = append(res.Functions, Function{Name: st.Name, Old: st.Addr, New: st.New, JumpLen: len(st.Tramp), Gated: st.Gated})
	}
	res.Total = time.Since(start)
	return res, nil
}

// makeSite prepares one site. Its jump leads to a stub at stubAddr that
// tests the gate and otherwise runs the function's displaced first
// instructions, so writing the jump changes nothing until the gate is set.
// When those instructions cannot be moved (or the function branches back
// into them) the jump goes straight to the new function instead.
//
// Bytes the architecture keeps at the entry (an arm64 landing pad) stay in
// place and the jump follows them. Code that undoes their effect (AUTIASP
// after PACIASP) runs in the stub space before the new function is
// entered, on both the gated and the direct way:
//
//	stub:  gate check, to enter when the gate is set
//	       displaced instructions
//	       jump back into the old body
//	enter: undo code, jump to the new function (only with undo code)
func (s *session) makeSite(ps plannedSite, newAddr uint64, linked *link.Linked, stubAddr, gate uint64) (site, error) {
	a := s.arch
	keep, undo := 0, []byte(nil)
	if a.KeepEntry != nil {
		keep, undo = a.KeepEntry(ps.orig)
	}
	at, room := ps.addr+uint64(keep), ps.room-uint64(keep)
	writeStub := func(code []byte) error {
		if len(code) > a.MaxStubLen {
			return arch.ErrCannotDisplace
		}
		dst := linked.Code(stubAddr, uint64(len(code)))
		if dst == nil {
			return fmt.Errorf("stub for %s outside patch code", ps.fn.Old)
		}
		copy(dst, code)
		return nil
	}
	// enterAt returns code placed at addr that enters the new function.
	enterAt := func(addr uint64) ([]byte, error) {
		jump, err := a.EncodeJump(addr+uint64(len(undo)), newAddr, ^uint64(0))
		if err != nil {
			return nil, err
		}
		return append(append([]byte(nil), undo...), jump...), nil
	}
	direct := func(reason error) (site, error) {
		target := newAddr
		if len(undo) > 0 {
			code, err := enterAt(stubAddr)
			if err != nil {
				return site{}, err
			}
			if err := writeStub(code); err != nil {
				return site{}, err
			}
			target = stubAddr
		}
		tramp, err := a.EncodeJump(at, target, room)
		if err != nil {
			return site{}, &FunctionError{Function: ps.fn.Old, Err: ErrNoRoom, Detail: err.Error()}
		}
		orig := make([]byte, len(tramp))
		if _, err := s.p.ReadAt(orig, at); err != nil {
			return site{}, err
		}
		return site{Addr: at, New: newAddr, Orig: orig, Tramp: tramp, Name: truncName(ps.fn.Old), directReason: reason.Error()}, nil
	}
	tramp, err := a.EncodeJump(at, stubAddr, room)
	if err != nil {
		return direct(err)
	}
	n := len(tramp)
	// The running bytes: a previous patch's jump, if one is stacked here.
	cur := make([]byte, min(room, 64))
	if _, err := s.p.ReadAt(cur, at); err != nil {
		return site{}, err
	}
	if a.BranchesInto(ps.orig, ps.addr, at, at+uint64(n)) {
		return direct(arch.ErrCannotDisplace)
	}
	bodyAt := stubAddr + uint64(a.GateCheckLen)
	body, covered, falls, err := a.Displace(cur, at, n, bodyAt)
	if err != nil {
		return direct(err)
	}
	if falls {
		backRoom := ^uint64(0)
		if a.BackJumpShort {
			backRoom = uint64(a.ShortJumpLen)
		}
		back, err := a.EncodeJump(bodyAt+uint64(len(body)), at+uint64(covered), backRoom)
		if err != nil {
			resume, from := at+uint64(covered), bodyAt+uint64(len(body))
			return direct(fmt.Errorf("the stub's way back into the old body at %#x must be a direct jump, and the stub lies %d MiB away, out of its reach", resume, absDiff(resume, from)>>20))
		}
		body = append(body, back...)
	}
	enter := newAddr
	if len(undo) > 0 {
		enter = bodyAt + uint64(len(body))
		code, err := enterAt(enter)
		if err != nil {
			return direct(err)
		}
		body = append(body, code...)
	}
	check, err := a.EncodeGateCheck(stubAddr, gate, enter)
	if err != nil {
		return direct(err)
	}
	if len(check) != a.GateCheckLen {
		return site{}, fmt.Errorf("gate check is %d bytes, not %d", len(check), a.GateCheckLen)
	}
	if err := writeStub(append(check, body...)); err != nil {
		if errors.Is(err, arch.ErrCannotDisplace) {
			return direct(err)
		}
		return site{}, err
	}
	return site{Gated: true, Addr: at, New: newAddr, Orig: append([]byte(nil), cur[:n]...), Tramp: tramp, Name: truncName(ps.fn.Old)}, nil
}

// keepEntry is how many bytes at a function's entry stay in place.
func (s *session) keepEntry(code []byte) int {
	if s.arch.KeepEntry == nil {
		return 0
	}
	keep, _ := s.arch.KeepEntry(code)
	return keep
}

// hasUnwindTables reports whether the patch carries a non-empty .eh_frame.
func hasUnwindTables(spec *patchfile.Spec) bool {
	for _, sec := range spec.Sections {
		if sec.Name == ".eh_frame" && sec.Size > 0 {
			return true
		}
	}
	return false
}

// planSite checks one replaced function against the running code.
func (s *session) planSite(img *target.Image, syms *target.Symbols, fn patchfile.Function, records []found) (plannedSite, error) {
	sym, err := syms.Lookup(fn.Old, fn.OldFile)
	if err != nil {
		return plannedSite{}, err
	}
	if sym.Value != fn.OldAddr {
		return plannedSite{}, &FunctionError{Function: fn.Old, Err: ErrHashMismatch,
			Detail: fmt.Sprintf("symbol is at %#x in the target but the patch expects %#x", sym.Value, fn.OldAddr)}
	}
	if sym.Type == elf.STT_GNU_IFUNC {
		return plannedSite{}, &FunctionError{Function: fn.Old, Err: ErrNotFunction,
			Detail: "it is an IFUNC resolver that already ran; replace the implementation it selected instead"}
	}
	if sym.Type != elf.STT_FUNC {
		return plannedSite{}, &FunctionError{Function: fn.Old, Err: ErrNotFunction, Detail: fmt.Sprintf("symbol type is %v", sym.Type)}
	}
	addr := img.Bias + sym.Value
	room := syms.Room(sym)
	code := make([]byte, fn.OldSize)
	if _, err := s.p.ReadAt(code, addr); err != nil {
		return plannedSite{}, err
	}
	if keep := s.keepEntry(code); room < uint64(keep+s.arch.ShortJumpLen) {
		detail := fmt.Sprintf("%d bytes before the next symbol, a jump needs %d", room, s.arch.ShortJumpLen)
		if keep > 0 {
			detail += fmt.Sprintf(" after the %d-byte landing pad", keep)
		}
		return plannedSite{}, &FunctionError{Function: fn.Old, Err: ErrNoRoom, Detail: detail}
	}
	ranges := []consistency.Range{{Lo: addr, Hi: addr + max(fn.OldSize, 1), Name: fn.Old}}
	// Functions already patched: hash the original bytes, and count every
	// version still mapped as "being replaced". Newest first, so the oldest
	// patch's saved bytes (the original ones) are copied last. Sort a copy:
	// the caller holds pointers into records.
	records = append([]found(nil), records...)
	sort.Slice(records, func(i, j int) bool { return records[i].rec.Seq > records[j].rec.Seq })
	for _, r := range records {
		for _, st := range r.rec.Sites {
			if st.Addr >= addr && st.Addr < addr+fn.OldSize {
				copy(code[st.Addr-addr:], st.Orig) // a jump may run into padding past the end
				ranges = append(ranges, versionRanges(s.arch, fn.Old, r.rec.ID, st)...)
			}
		}
	}
	// Every earlier jump must be where this one goes, or they would
	// overlap: one written by an engine that placed it elsewhere in the
	// entry (before it kept landing pads) is refused.
	at := addr + uint64(s.keepEntry(code))
	for _, r := range records {
		for _, st := range r.rec.Sites {
			if st.Addr >= addr && st.Addr < addr+fn.OldSize && st.Addr != at {
				return plannedSite{}, &FunctionError{Function: fn.Old, Err: ErrStacked,
					Detail: fmt.Sprintf("patch %s jumps at %#x, a new patch would at %#x; revert %s first", r.rec.ID, st.Addr, at, r.rec.ID)}
			}
		}
	}
	sum := sha256.Sum256(code)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != fn.OldHash {
		return plannedSite{}, &FunctionError{Function: fn.Old, Err: ErrHashMismatch,
			Detail: fmt.Sprintf("running bytes hash to %s, the patch was made for %s", got, fn.OldHash)}
	}
	return plannedSite{fn: fn, addr: addr, room: room, ranges: ranges, newName: fn.New, orig: code}, nil
}

// resolver binds the patch's undefined symbols: the base image first, with
// its local symbols, then the other loaded objects in link-map order.
func (s *session) resolver(img *target.Image, syms *target.Symbols) link.Resolver {
	var order []*target.Image
	loaded := map[*target.Image]*target.Symbols{img: syms}
	symsOf := func(im *target.Image) *target.Symbols {
		is := loaded[im]
		if is == nil {
			var err error
			if is, err = target.LoadSymbols(im.File, im.Path); err != nil {
				is = &target.Symbols{}
			}
			loaded[im] = is
		}
		return is
	}
	loadOrder := func() []*target.Image {
		if order == nil {
			order = target.LoadOrder(s.p, s.images)
		}
		return order
	}
	ifunc := func(owner *target.Image, osyms *target.Symbols, sym target.Symbol) (uint64, error) {
		if slot, ok := osyms.IFuncSlot(sym.Value); ok {
			return s.readWord(owner.Bias + slot)
		}
		return s.boundIFunc(owner, sym, append([]*target.Image{img}, loadOrder()...), symsOf)
	}
	return func(name string, tls bool) (link.Resolved, error) {
		sym, err := syms.Lookup(name, "")
		if err == nil {
			if tls != (sym.Type == elf.STT_TLS) {
				return link.Resolved{}, fmt.Errorf("%s: thread-local mismatch between patch and target", name)
			}
			r := link.Resolved{Addr: img.Bias + sym.Value, Size: sym.Size, Origin: img.Path, TLS: tls}
			if sym.Bind != elf.STB_LOCAL && sym.Type == elf.STT_OBJECT && !img.Main {
				// A library's exported variable may be interposed (an
				// executable's copy relocation): its own GOT slot says
				// which definition is live.
				if slot, ok := syms.GOTSlot(name); ok {
					b := make([]byte, 8)
					if _, err := s.p.ReadAt(b, img.Bias+slot); err == nil {
						if live := le64(b); live != 0 && live != r.Addr {
							r.Addr, r.Far = live, live < img.Lo || live >= img.Hi
						}
					}
				}
			}
			if sym.Type == elf.STT_GNU_IFUNC {
				if r.Addr, err = ifunc(img, syms, sym); err != nil {
					return link.Resolved{}, err
				}
				r.Far = r.Addr < img.Lo || r.Addr >= img.Hi
			}
			if tls {
				off, err := tpOffset(s.arch, img, syms, sym)
				if err != nil {
					return link.Resolved{}, err
				}
				r.TPOff = off
			}
			return r, nil
		}
		if errors.Is(err, target.ErrAmbiguousSymbol) {
			return link.Resolved{}, err
		}
		for _, other := range loadOrder() {
			if other == img {
				continue
			}
			osyms := symsOf(other)
			ds, ok := osyms.LookupDynamic(name)
			if !ok || (ds.Type == elf.STT_TLS) != tls {
				continue
			}
			if tls {
				return link.Resolved{}, fmt.Errorf("%s: thread-local variables of other objects (%s): %w", name, other.Path, link.ErrNotSupported)
			}
			addr := other.Bias + ds.Value
			if ds.Type == elf.STT_GNU_IFUNC {
				if addr, err = ifunc(other, osyms, ds); err != nil {
					return link.Resolved{}, err
				}
			}
			return link.Resolved{Addr: addr, Size: ds.Size, Far: true, Origin: other.Path}, nil
		}
		return link.Resolved{}, target.ErrSymbolNotFound
	}
}

// boundIFunc finds what an IFUNC without an IRELATIVE slot (the resolver
// is never run by the engine) stands for in this process: the slot of an
// object that calls it, once the dynamic linker bound it there, or else
// that object's PLT entry, which binds it on the first call exactly as the
// object's own calls do. Only slots asking for the symbol's version count.
func (s *session) boundIFunc(owner *target.Image, sym target.Symbol, images []*target.Image, symsOf func(*target.Image) *target.Symbols) (uint64, error) {
	for pass := 0; pass < 2; pass++ {
		for _, im := range images {
			is := symsOf(im)
			if pass == 0 {
				slot, lazy, ok := is.BoundSlot(sym.Name, sym.Version)
				if !ok {
					continue
				}
				v, err := s.readWord(im.Bias + slot)
				if err == nil && v != 0 && !(lazy && is.InPLT(v-im.Bias)) {
					return v, nil
				}
			} else if entry, ok := is.PLTEntry(sym.Name, sym.Version); ok {
				return im.Bias + entry, nil
			}
		}
	}
	return 0, fmt.Errorf("%s in %s is an IFUNC that no relocation resolved and no loaded object calls; call the implementation it selects directly: %w", sym.Name, owner.Path, link.ErrNotSupported)
}

// readWord reads a pointer-sized little-endian word of the target.
func (s *session) readWord(addr uint64) (uint64, error) {
	b := make([]byte, 8)
	if _, err := s.p.ReadAt(b, addr); err != nil {
		return 0, err
	}
	return le64(b), nil
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// tpOffset computes a static TLS variable's offset from the thread pointer.
// The main executable's block is the first one, placed where the
// architecture's TLS variant puts it (right below the thread pointer on
// x86-64, after the 16-byte TCB on arm64), exactly as glibc lays it out.
func tpOffset(a *arch.Arch, img *target.Image, syms *target.Symbols, sym target.Symbol) (int64, error) {
	if !img.Main || syms.TLS == nil {
		return 0, fmt.Errorf("thread-local %s: only the main executable's thread-local variables are supported: %w", sym.Name, link.ErrNotSupported)
	}
	t := syms.TLS
	return int64(sym.Value) + a.TLSBlockOffset(t.Vaddr, t.MemSize, t.Align), nil
}

// cfiModules parses the unwind tables of every executable image before any
// thread is stopped, so the check itself only does lookups.
func (s *session) cfiModules() *consistency.Modules {
	var mods []*consistency.Module
	for _, img := range s.images {
		exec := false
		for _, m := range img.Maps {
			exec = exec || m.Exec()
		}
		if !exec {
			continue
		}
		if m, err := consistency.LoadModule(img.File, img.Bias); err == nil {
			mods = append(mods, m)
		}
	}
	// The vDSO has no file; its image is read from the process. Threads
	// often stop inside it (clock_gettime), and with its CFI they unwind
	// precisely instead of falling back to a stack scan.
	for _, m := range s.maps {
		if m.Path != "[vdso]" || m.End-m.Start > 1<<20 {
			continue
		}
		img := make([]byte, m.End-m.Start)
		if _, err := s.p.ReadAt(img, m.Start); err != nil {
			break
		}
		if bias, err := consistency.MappingBias(bytes.NewReader(img), m.Start, 0); err == nil {
			if mod, err := consistency.NewModule(bytes.NewReader(img), "[vdso]", bias); err == nil {
				mods = append(mods, mod)
			}
		}
	}
	return consistency.NewModules(mods...)
}

// mapNear maps size bytes of fresh memory as close to img as the maps allow,
// within reach of a short jump where a hole is, else within the patch's
// PC-relative reach (arm64: ±128 MiB for B, else ±4 GiB with long jumps).
func (s *session) mapNear(t *proc.Thread, img *target.Image, size, maxEnd uint64) (uint64, error) {
	reaches := []uint64{uint64(s.arch.JumpReach)}
	if far := s.arch.Reach(); far > s.arch.JumpReach {
		reaches = append(reaches, uint64(far))
	}
	for attempt := 0; attempt < 8; attempt++ {
		maps, err := target.ReadMaps(s.pid)
		if err != nil {
			return 0, err
		}
		var base uint64
		for _, reach := range reaches {
			if base, err = chooseBase(maps, img.Lo, img.Hi, size, reach, maxEnd); err == nil {
				break
			}
		}
		if err != nil {
			return 0, err
		}
		got, err := s.syscall(t, s.arch.SysMmap, base, size, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
		if err == unix.EEXIST {
			continue // something mapped there meanwhile
		}
		if err != nil {
			return 0, fmt.Errorf("map patch memory: %w", err)
		}
		if got != base {
			// A kernel without MAP_FIXED_NOREPLACE treats the address as a hint.
			s.syscall(t, s.arch.SysMunmap, got, size)
			return 0, fmt.Errorf("map patch memory: kernel placed it at %#x, not %#x: %w", got, base, ErrNoSpace)
		}
		return base, nil
	}
	return 0, ErrNoSpace
}

// versionRanges is the code of an earlier patch's version of a function,
// which a new patch of it replaces too: the new function and, for a gated
// site, its stub, from which a thread would enter that version. A direct
// site whose jump leads to stub space rather than to the new function
// (arm64: `autiasp; B new` after a kept paciasp) counts that stub too.
func versionRanges(a *arch.Arch, name, id string, st site) []consistency.Range {
	ranges := []consistency.Range{{Lo: st.New, Hi: st.New + uint64(max(st.NewSize, 1)), Name: name + " (patch " + id + ")"}}
	if to, ok := a.JumpTarget(st.Tramp, st.Addr); st.Gated || (ok && to != st.New) {
		ranges = append(ranges, stubRange(a, st, name+" (stub of "+id+")")...)
	}
	return ranges
}

// stubRange is the gated stub a site's jump leads to.
func stubRange(a *arch.Arch, st site, name string) []consistency.Range {
	stub, ok := a.JumpTarget(st.Tramp, st.Addr)
	if !ok {
		return nil
	}
	return []consistency.Range{{Lo: stub, Hi: stub + uint64(a.MaxStubLen), Name: name}}
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// heapReserve keeps patch memory away from where brk grows the heap.
const heapReserve = 1 << 30

func chooseBase(maps []target.Mapping, lo, hi, size, reach, maxEnd uint64) (uint64, error) {
	const minAddr = 1 << 16
	const guard = 1 << 16
	winLo := uint64(minAddr)
	if hi > reach-guard {
		winLo = max(winLo, hi-(reach-guard))
	}
	winHi := lo + (reach - guard)
	if maxEnd != 0 && winHi > maxEnd {
		winHi = maxEnd
	}
	blocked := append([]target.Mapping(nil), maps...)
	for _, m := range maps {
		if m.Path == "[heap]" {
			blocked = append(blocked, target.Mapping{Start: m.Start, End: m.Start + heapReserve})
		}
	}
	sort.Slice(blocked, func(i, j int) bool { return blocked[i].Start < blocked[j].Start })
	best, bestDist := uint64(0), ^uint64(0)
	for _, h := range target.Holes(mergeSpans(blocked), winLo, winHi) {
		start := (h[0] + guard + link.Page - 1) &^ (link.Page - 1)
		end := (h[1] - guard) &^ (link.Page - 1)
		if end <= start || end-start < size {
			continue
		}
		var cand, dist uint64
		if end <= lo {
			cand, dist = end-size, lo-end
		} else {
			cand, dist = start, start-min(start, hi)
		}
		if dist < bestDist {
			best, bestDist = cand, dist
		}
	}
	if bestDist == ^uint64(0) {
		return 0, fmt.Errorf("%w: no %d-byte hole within %d MiB of %#x-%#x", ErrNoSpace, size, reach>>20, lo, hi)
	}
	return best, nil
}

func mergeSpans(ms []target.Mapping) []target.Mapping {
	var out []target.Mapping
	for _, m := range ms {
		if n := len(out); n > 0 && m.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, m.End)
			continue
		}
		out = append(out, m)
	}
	return out
}

// writeSites switches a patch in (or, reverting, out) while every thread
// is stopped. Applying: jumps to gated stubs first (inert while the gate is
// clear), then the gate (the single commit point), then the direct jumps.
// Reverting runs the mirror image. A failed write undoes what was written.
func (s *session) writeSites(base uint64, rec *record, revert bool) error {
	writeWord := func(off uint64, p uint32) error {
		b := []byte{byte(p), byte(p >> 8), byte(p >> 16), byte(p >> 24)}
		_, err := s.p.WriteAt(b, base+off)
		return err
	}
	type step struct {
		do, undo func() error
	}
	var steps []step
	siteStep := func(st site, code, undo []byte) step {
		return step{
			do:   func() error { _, err := s.p.WriteAt(code, st.Addr); return err },
			undo: func() error { _, err := s.p.WriteAt(undo, st.Addr); return err },
		}
	}
	gateStep := func(v, old byte) step {
		return step{
			do:   func() error { _, err := s.p.WriteAt([]byte{v}, base+gateOffset); return err },
			undo: func() error { _, err := s.p.WriteAt([]byte{old}, base+gateOffset); return err },
		}
	}
	phase, final := uint32(phaseSwitching), uint32(phaseActive)
	if revert {
		phase, final = phaseReverting, phasePrepared
	}
	if err := writeWord(phaseOffset, phase); err != nil {
		return err
	}
	if !revert {
		for _, st := range rec.Sites {
			if st.Gated {
				steps = append(steps, siteStep(st, st.Tramp, st.Orig))
			}
		}
		steps = append(steps, gateStep(1, 0))
		for _, st := range rec.Sites {
			if !st.Gated {
				steps = append(steps, siteStep(st, st.Tramp, st.Orig))
			}
		}
	} else {
		for _, st := range rec.Sites {
			if !st.Gated {
				steps = append(steps, siteStep(st, st.Orig, st.Tramp))
			}
		}
		steps = append(steps, gateStep(0, 1))
		for _, st := range rec.Sites {
			if st.Gated {
				steps = append(steps, siteStep(st, st.Orig, st.Tramp))
			}
		}
	}
	for i, st := range steps {
		if err := st.do(); err != nil {
			for j := i - 1; j >= 0; j-- {
				steps[j].undo()
			}
			return err
		}
		if i == 0 && !revert {
			fault(FaultMidSwitch)
		}
	}
	if revert {
		fault(FaultMidRevert)
	}
	// Informational only: the bytes and the gate decide what runs. Failing
	// here would make apply unmap memory the jumps now lead to.
	writeWord(phaseOffset, final)
	return nil
}

// switchWhenIdle stops every thread until none is inside ranges, then runs
// write while they are all stopped.
func (s *session) switchWhenIdle(ctx context.Context, timeout time.Duration, mods *consistency.Modules, ranges []consistency.Range, res *Result, write func() error) error {
	deadline := time.Now().Add(timeout)
	backoff := time.Millisecond
	for {
		maps, err := target.ReadMaps(s.pid)
		if err != nil {
			return err
		}
		res.Attempts++
		var busy error
		var done bool
		err = s.p.Run(func() error {
			threads, err := s.p.StopAll()
			if errors.Is(err, proc.ErrStopTimeout) {
				// A thread in an uninterruptible sleep: the others were let
				// go at once; try again when it may have woken.
				busy = err
				return nil
			}
			if err != nil {
				return err
			}
			t0, t1 := s.p.StopStarted, time.Now()
			fault(FaultStopped)
			busy, err = s.check(threads, maps, mods, ranges)
			t2 := time.Now()
			if err != nil || busy != nil {
				s.p.ResumeAll()
				return err
			}
			err = write()
			fault(FaultAfterSwitch)
			t3 := time.Now()
			s.p.ResumeAll()
			t4 := time.Now()
			res.Pause = t4.Sub(t0)
			res.Phases = PausePhases{Stop: t1.Sub(t0), Check: t2.Sub(t1), Write: t3.Sub(t2), Resume: t4.Sub(t3)}
			res.Threads = len(threads)
			res.Frames, res.Fallbacks = s.lastCheck.Frames, s.lastCheck.Fallbacks
			done = true
			return err
		})
		if err != nil || done {
			return err
		}
		if time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("gave up after %v and %d attempts: %w", timeout, res.Attempts, busy)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

// unwindArch is the unwinder's description of the target's architecture.
// On arm64 it carries the process's pointer authentication mask, so
// signed return addresses are recognised.
func (s *session) unwindArch(threads []*proc.Thread) (*consistency.Arch, error) {
	switch s.arch.Machine {
	case elf.EM_X86_64:
		return consistency.AMD64, nil
	case elf.EM_AARCH64:
		ua := *consistency.ARM64
		if len(threads) > 0 {
			ua.PACMask = s.p.PointerAuthMask(threads[0])
		}
		return &ua, nil
	}
	return nil, fmt.Errorf("unwinding %s: %w", s.arch.Name, arch.ErrNotSupported)
}

// stackOf returns the bounds of the mapping holding sp, or zeros.
func stackOf(maps []target.Mapping, sp uint64) (lo, hi uint64) {
	for _, m := range maps {
		if m.Contains(sp) {
			return m.Start, m.End
		}
	}
	return 0, 0
}

func (s *session) check(threads []*proc.Thread, maps []target.Mapping, mods *consistency.Modules, ranges []consistency.Range) (error, error) {
	cts := make([]consistency.Thread, 0, len(threads))
	for _, t := range threads {
		sp := t.Regs.SP()
		ct := consistency.Thread{TID: t.TID, Regs: t.Regs.DWARF(), PC: t.Regs.PC(), SP: sp}
		ct.StackLo, ct.StackHi = stackOf(maps, sp)
		ct.StackOf = func(addr uint64) (uint64, uint64) { return stackOf(maps, addr) }
		if ct.StackHi == 0 {
			// A stack mapped after maps was read: read it again.
			fresh, err := target.ReadMaps(s.pid)
			if err != nil {
				return nil, err
			}
			ct.StackLo, ct.StackHi = stackOf(fresh, sp)
		}
		cts = append(cts, ct)
	}
	ua, err := s.unwindArch(threads)
	if err != nil {
		return nil, err
	}
	result, err := consistency.Check(ua, mods, s.p, cts, ranges)
	var te *consistency.ThreadError
	if errors.As(err, &te) {
		// A thread that cannot be examined now (say, in a handler on an
		// alternate signal stack) counts as busy: it is usually transient.
		return fmt.Errorf("%w: %v", consistency.ErrBusy, te), nil
	}
	if err != nil {
		return nil, err
	}
	s.lastCheck = result
	if len(result.Busy) > 0 {
		return &consistency.BusyError{Busy: result.Busy}, nil
	}
	return nil, nil
}
