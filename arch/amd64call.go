package arch

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// CallABI describes one architecture's call stub: the data it works with
// and its encoder.
type CallABI struct {
	// SavedSize and SavedAlign are the size and alignment of
	// CallFrame.Saved; FPUSize is that of CallFrame.FPU (0: not used).
	SavedSize, SavedAlign, FPUSize int
	// StubLen bounds the length of an encoded stub.
	StubLen int
	// Encode encodes a stub at at; marker is the offset of its marker
	// system call instruction.
	Encode func(at uint64, f CallFrame) (code []byte, marker int, err error)
}

// CallStub returns a's call stub, nil when it has none.
func (a *Arch) CallStub() *CallABI {
	switch a.Machine {
	case elf.EM_X86_64:
		return amd64Call
	case elf.EM_AARCH64:
		return arm64Call
	}
	return nil
}

var amd64Call = &CallABI{SavedSize: CallSavedSize, SavedAlign: 8, FPUSize: FPUAreaSize, StubLen: 192, Encode: EncodeCallStub}

// CallFrame places the data a call stub works with, all inside patch memory.
type CallFrame struct {
	// Saved holds the thread's own context, which the stub restores by
	// itself if nobody is left to do it (the engine died during the call).
	// x86-64: GPRs in CallSavedOrder, then rsp, rip and rflags; arm64: an
	// rt_sigframe (ARM64Context.SigFrame).
	Saved uint64
	// Func is a slot holding the function to call.
	Func uint64
	// Done is a byte the stub sets to Value right after the call returns,
	// so whether the call happened is recorded even if the engine dies.
	Done  uint64
	Value byte
	// FPU is a 64-byte aligned save area for the floating-point state
	// (x86-64; on arm64 it is part of Saved).
	FPU uint64
	// XSave selects xsave/xrstor (x87, SSE and AVX state) over fxsave.
	XSave bool
}

// CallSavedOrder is the order of the general registers in CallFrame.Saved.
var CallSavedOrder = []string{"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

// CallSavedSize is the size of CallFrame.Saved: 15 GPRs, rsp, rip, rflags.
const CallSavedSize = 18 * 8

// FPUAreaSize is enough for the x87, SSE and AVX components in the
// standard xsave format (576 + 256 bytes).
const FPUAreaSize = 1024

// EncodeCallStub encodes, at at, x86-64 code that saves the floating-point state,
// calls the function in f.Func (arguments already in registers, the stack
// pointer already set to a 16-byte aligned scratch stack), records the
// call in f.Done, restores the floating-point state and makes a getpid
// system call: the marker a live tracer stops at (the returned offset) to
// put the thread's own registers back. Past the marker the stub restores
// the thread's context from f.Saved and jumps back to where it was, so a
// tracer that dies at any moment never leaves the thread lost.
func EncodeCallStub(at uint64, f CallFrame) (code []byte, marker int, err error) {
	var b []byte
	var fail error
	rel := func(target uint64, tail int) {
		// A RIP-relative disp32, computed from the end of the instruction
		// (tail bytes of immediate may follow the displacement).
		end := at + uint64(len(b)) + 4 + uint64(tail)
		d := int64(target) - int64(end)
		if !fitsInt32(d) && fail == nil {
			fail = fmt.Errorf("call stub at %#x cannot reach %#x: %w", at, target, ErrOutOfRange)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(int32(d)))
	}
	fpu := func(save bool) {
		if f.XSave {
			b = append(b, 0xb8, 7, 0, 0, 0, 0x31, 0xd2) // mov $7,%eax; xor %edx,%edx
			if save {
				b = append(b, 0x48, 0x0f, 0xae, 0x25) // xsave64
			} else {
				b = append(b, 0x48, 0x0f, 0xae, 0x2d) // xrstor64
			}
		} else if save {
			b = append(b, 0x48, 0x0f, 0xae, 0x05) // fxsave64
		} else {
			b = append(b, 0x48, 0x0f, 0xae, 0x0d) // fxrstor64
		}
		rel(f.FPU, 0)
	}
	fpu(true)
	b = append(b, 0xff, 0x15) // call *Func(%rip)
	rel(f.Func, 0)
	b = append(b, 0xc6, 0x05) // movb $Value, Done(%rip)
	rel(f.Done, 1)
	b = append(b, f.Value)
	fpu(false)
	b = append(b, 0xb8, 39, 0, 0, 0) // mov $SYS_getpid,%eax
	marker = len(b)
	b = append(b, 0x0f, 0x05) // syscall
	b = append(b, 0xff, 0x35) // push rflags(%rip); popfq
	rel(f.Saved+17*8, 0)
	b = append(b, 0x9d)
	// mov saved(%rip),%reg for every GPR: REX.W (+REX.R for r8-r15), 8b, modrm 00 reg 101.
	regNum := map[string]byte{"rax": 0, "rcx": 1, "rdx": 2, "rbx": 3, "rsp": 4, "rbp": 5, "rsi": 6, "rdi": 7,
		"r8": 8, "r9": 9, "r10": 10, "r11": 11, "r12": 12, "r13": 13, "r14": 14, "r15": 15}
	load := func(reg string, slot int) {
		n := regNum[reg]
		rex := byte(0x48)
		if n >= 8 {
			rex |= 0x04
		}
		b = append(b, rex, 0x8b, 0x05|(n&7)<<3)
		rel(f.Saved+uint64(slot*8), 0)
	}
	for i, reg := range CallSavedOrder {
		load(reg, i)
	}
	load("rsp", 15)
	b = append(b, 0xff, 0x25) // jmp *rip(%rip)
	rel(f.Saved+16*8, 0)
	return b, marker, fail
}
