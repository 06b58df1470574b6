package arch

import (
	"encoding/binary"
	"fmt"
)

// The arm64 signal frame, as the kernel's rt_sigreturn reads it at the
// stack pointer (uapi asm/sigcontext.h and asm/ucontext.h):
//
//	struct rt_sigframe {
//		siginfo_t info;                 //   0, 128 bytes
//		struct ucontext {               // 128
//			u64 uc_flags, uc_link;  // 128, 136
//			stack_t uc_stack;       // 144: ss_sp, ss_flags (int), ss_size
//			sigset_t uc_sigmask;    // 168: 8 bytes, padded to 128
//			struct sigcontext {     // 304, 16-aligned
//				u64 fault_address;
//				u64 regs[31], sp, pc, pstate;
//				u8 __reserved[4096]; // 592: records, 16-aligned
//			} uc_mcontext;
//		} uc;
//	};                                      // 4688 bytes
//
// The records in __reserved are one fpsimd_context (magic, size 528, fpsr,
// fpcr, vregs[32] of 128 bits) and a terminating null record.
// Where rt_sigreturn finds the interrupted context in an arm64 signal
// frame, from the frame's start (the stack pointer at the trampoline).
const (
	ARM64SigFrameRegs = a64SFRegs // x0..x30
	ARM64SigFrameSP   = a64SFSP
	ARM64SigFramePC   = a64SFPC
)

const (
	ARM64SigFrameSize = 4688

	a64SFStackFlags = 152
	a64SFMask       = 168
	a64SFRegs       = 312
	a64SFSP         = 560
	a64SFPC         = 568
	a64SFPState     = 576
	a64SFFPSIMD     = 592 // the fpsimd_context record
	a64FPSIMDMagic  = 0x46508001
	a64FPSIMDSize   = 528
	// a64InvalidStackMode is neither SS_ONSTACK nor SS_DISABLE nor 0:
	// rt_sigreturn's restore_altstack then fails with EINVAL, which it
	// ignores, and the thread's alternate signal stack stays as it is.
	a64InvalidStackMode = 3
)

// ARM64Context is a thread's user context as arm64's rt_sigreturn restores
// it: the general registers, sp, pc, pstate, the FP/SIMD state and the
// signal mask.
type ARM64Context struct {
	X              [31]uint64
	SP, PC, PState uint64
	FPSR, FPCR     uint32
	V              [32][16]byte // q0..q31, in memory order
	Mask           uint64
}

// SigFrame encodes c as an rt_sigframe: with the stack pointer at its
// first byte (16-aligned), rt_sigreturn loads c into the thread exactly.
// The frame leaves the alternate signal stack alone, and holds no pointer,
// so it may be copied anywhere.
func (c *ARM64Context) SigFrame() []byte {
	b := make([]byte, ARM64SigFrameSize)
	le := binary.LittleEndian
	le.PutUint32(b[a64SFStackFlags:], a64InvalidStackMode)
	le.PutUint64(b[a64SFMask:], c.Mask)
	for i, v := range c.X {
		le.PutUint64(b[a64SFRegs+8*i:], v)
	}
	le.PutUint64(b[a64SFSP:], c.SP)
	le.PutUint64(b[a64SFPC:], c.PC)
	le.PutUint64(b[a64SFPState:], c.PState)
	fp := b[a64SFFPSIMD:]
	le.PutUint32(fp[0:], a64FPSIMDMagic)
	le.PutUint32(fp[4:], a64FPSIMDSize)
	le.PutUint32(fp[8:], c.FPSR)
	le.PutUint32(fp[12:], c.FPCR)
	for i, v := range c.V {
		copy(fp[16+16*i:], v[:])
	}
	// The null record after it ends the list: the frame is zeroed there.
	return b
}

// ParseARM64SigFrame decodes a frame made by SigFrame.
func ParseARM64SigFrame(b []byte) (*ARM64Context, error) {
	if len(b) < ARM64SigFrameSize {
		return nil, fmt.Errorf("signal frame: %d bytes, want %d", len(b), ARM64SigFrameSize)
	}
	le := binary.LittleEndian
	fp := b[a64SFFPSIMD:]
	if le.Uint32(fp) != a64FPSIMDMagic || le.Uint32(fp[4:]) != a64FPSIMDSize {
		return nil, fmt.Errorf("signal frame: no fpsimd record first")
	}
	if le.Uint64(fp[a64FPSIMDSize:]) != 0 {
		return nil, fmt.Errorf("signal frame: the fpsimd record is not followed by the null record")
	}
	c := &ARM64Context{SP: le.Uint64(b[a64SFSP:]), PC: le.Uint64(b[a64SFPC:]), PState: le.Uint64(b[a64SFPState:]),
		FPSR: le.Uint32(fp[8:]), FPCR: le.Uint32(fp[12:]), Mask: le.Uint64(b[a64SFMask:])}
	for i := range c.X {
		c.X[i] = le.Uint64(b[a64SFRegs+8*i:])
	}
	for i := range c.V {
		copy(c.V[i][:], fp[16+16*i:])
	}
	return c, nil
}

// arm64Call is the arm64 call stub: CallFrame.Saved is an rt_sigframe
// (ARM64SigFrameSize bytes, 16-aligned) holding the thread's registers;
// CallFrame.FPU and XSave are not used.
var arm64Call = &CallABI{SavedSize: ARM64SigFrameSize, SavedAlign: 16, StubLen: 320, Encode: arm64CallStub}

// System call numbers and instructions the stub uses.
const (
	a64SysRtSigprocmask = 135
	a64SysRtSigreturn   = 139
	a64SysGetpid        = 172
	a64SVC0             = 0xd4000001
	a64MRSFPSR          = 0xd53b4420 // mrs xN, fpsr (| N)
	a64MRSFPCR          = 0xd53b4400
	a64MSRFPSR          = 0xd51b4420 // msr fpsr, xN (| N)
	a64MSRFPCR          = 0xd51b4400
)

func a64MOVX(rd, rm uint32) uint32   { return 0xaa0003e0 | rm<<16 | rd } // orr xd, xzr, xm
func a64MOVZX(rd, imm uint32) uint32 { return 0xd2800000 | imm<<5 | rd }
func a64MOVZW(rd, imm uint32) uint32 { return 0x52800000 | imm<<5 | rd }
func a64QPair(load bool, rt, rn, off uint32) uint32 {
	// stp/ldp qt, qt+1, [xn, #off]: 128-bit pair, signed offset scaled by 16.
	op := uint32(0xad000000)
	if load {
		op = 0xad400000
	}
	return op | (off/16&0x7f)<<15 | (rt+1)<<10 | rn<<5 | rt
}
func a64LdStW(load bool, rt, rn, off uint32) uint32 { // str/ldr wt, [xn, #off]
	op := uint32(0xb9000000)
	if load {
		op = 0xb9400000
	}
	return op | (off/4)<<10 | rn<<5 | rt
}

// arm64CallStub encodes, at at:
//
//	mov   x9..x12, x0..x3          ; keep the arguments
//	rt_sigprocmask(SIG_BLOCK, NULL, &frame.uc_sigmask, 8)
//	                               ; the mask the thread runs with now: while
//	                               ; it was stopped inside ppoll or the like,
//	                               ; /proc showed that call's temporary mask
//	str   fpsr, fpcr, q0..q31 -> frame's fpsimd record
//	mov   x0..x3, x9..x12
//	ldr   x16, func ; blr x16      ; sp is the scratch stack
//	strb  #Value, done             ; the call happened
//	ldr   q0..q31, fpsr, fpcr <- frame
//	mov   x8, #getpid
//	svc   #0                       ; the marker: a live tracer stops here
//	mov   sp, frame                ; otherwise nobody will restore the thread:
//	mov   x8, #rt_sigreturn        ; the kernel loads x0..x30, sp, pc, pstate,
//	svc   #0                       ; the FP/SIMD state and the mask from the frame
//	brk   #0
//
// rt_sigreturn is the only exact way back on arm64: there is no
// memory-indirect jump, and x16/x17 may be live wherever the thread
// stopped (inside a PLT entry, say). The engine fills the frame's
// registers before the call; the stub fills its mask and FP/SIMD state
// before anything can use the frame, so the frame is complete on every
// path that reaches rt_sigreturn.
func arm64CallStub(at uint64, f CallFrame) (code []byte, marker int, err error) {
	if at&3 != 0 || f.Saved&15 != 0 || f.Func&7 != 0 {
		return nil, 0, fmt.Errorf("call stub at %#x, frame at %#x, function slot at %#x: misaligned", at, f.Saved, f.Func)
	}
	var w []uint32
	pc := func() uint64 { return at + 4*uint64(len(w)) }
	var fail error
	// addr puts the address of target into rd (adrp + add).
	addr := func(rd uint32, target uint64) {
		adrp, ok := encADR(pc(), target, rd, true)
		if !ok && fail == nil {
			fail = fmt.Errorf("call stub at %#x cannot reach %#x: %w", at, target, ErrOutOfRange)
		}
		w = append(w, adrp, encADDImm(rd, rd, uint32(target&0xfff)))
	}
	page := func(rd uint32, target uint64) {
		adrp, ok := encADR(pc(), target, rd, true)
		if !ok && fail == nil {
			fail = fmt.Errorf("call stub at %#x cannot reach %#x: %w", at, target, ErrOutOfRange)
		}
		w = append(w, adrp)
	}
	const x16, x17 = 16, 17
	fpsimd := f.Saved + a64SFFPSIMD
	for i := uint32(0); i < 4; i++ {
		w = append(w, a64MOVX(9+i, i))
	}
	w = append(w, a64MOVZX(0, 0), a64MOVZX(1, 0))
	addr(2, f.Saved+a64SFMask)
	w = append(w, a64MOVZX(3, 8), a64MOVZX(8, a64SysRtSigprocmask), a64SVC0)
	addr(x16, fpsimd)
	w = append(w, a64MRSFPSR|x17, a64LdStW(false, x17, x16, 8), a64MRSFPCR|x17, a64LdStW(false, x17, x16, 12))
	for q := uint32(0); q < 32; q += 2 {
		w = append(w, a64QPair(false, q, x16, 16+16*q))
	}
	for i := uint32(0); i < 4; i++ {
		w = append(w, a64MOVX(i, 9+i))
	}
	page(x16, f.Func)
	w = append(w, 0xf9400000|uint32(f.Func&0xfff)>>3<<10|x16<<5|x16) // ldr x16, [x16, #:lo12:func]
	w = append(w, 0xd63f0000|x16<<5)                                 // blr x16
	page(x16, f.Done)
	w = append(w, a64MOVZW(x17, uint32(f.Value)), 0x39000000|uint32(f.Done&0xfff)<<10|x16<<5|x17) // strb w17, [x16, #:lo12:done]
	addr(x16, fpsimd)
	for q := uint32(0); q < 32; q += 2 {
		w = append(w, a64QPair(true, q, x16, 16+16*q))
	}
	w = append(w, a64LdStW(true, x17, x16, 8), a64MSRFPSR|x17, a64LdStW(true, x17, x16, 12), a64MSRFPCR|x17)
	w = append(w, a64MOVZX(8, a64SysGetpid))
	marker = 4 * len(w)
	w = append(w, a64SVC0)
	addr(x16, f.Saved)
	w = append(w, encADDImm(31, x16, 0), a64MOVZX(8, a64SysRtSigreturn), a64SVC0, a64BRK) // mov sp, x16
	return words(w...), marker, fail
}
