package proc

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const (
	testArch  = unix.AUDIT_ARCH_X86_64
	retKill   = 0x80000000
	retAllow  = 0x7fff0000
	retErrno1 = 0x00050001
)

// killFixedNoreplace is shaped like a libseccomp filter: check the
// architecture, then the number, then an argument.
var killFixedNoreplace = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 4, Size: 4},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: testArch, SkipTrue: 1},
	bpf.RetConstant{Val: retKill},
	bpf.LoadAbsolute{Off: 0, Size: 4},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_MMAP, SkipFalse: 3},
	bpf.LoadAbsolute{Off: 16 + 3*8, Size: 4}, // args[3], low word: flags
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: unix.MAP_FIXED_NOREPLACE, SkipFalse: 1},
	bpf.RetConstant{Val: retKill},
	bpf.LoadAbsolute{Off: 0, Size: 4},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_PRCTL, SkipFalse: 1},
	bpf.RetConstant{Val: retErrno1},
	bpf.RetConstant{Val: retAllow},
}

func TestEvaluateSeccomp(t *testing.T) {
	mmap := SeccompCall{Name: "mmap", Nr: unix.SYS_MMAP, Args: [6]uint64{0x7f0000000000, 4096, 3, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0}}
	plainMmap := mmap
	plainMmap.Args[3] = unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	prctl := SeccompCall{Name: "prctl", Nr: unix.SYS_PRCTL, MayFail: true}
	mprotect := SeccompCall{Name: "mprotect", Nr: unix.SYS_MPROTECT}
	filters := [][]bpf.Instruction{killFixedNoreplace}

	err := evaluateSeccomp(filters, testArch, 0x1000, []SeccompCall{mprotect, mmap})
	if !errors.Is(err, ErrSeccomp) || !strings.Contains(err.Error(), "mmap would get SECCOMP_RET_KILL_PROCESS") {
		t.Errorf("mmap with MAP_FIXED_NOREPLACE: %v", err)
	}
	if err := evaluateSeccomp(filters, testArch, 0x1000, []SeccompCall{plainMmap, mprotect, prctl}); err != nil {
		t.Errorf("allowed calls, and an errno for a call that may fail: %v", err)
	}
	mustWork := prctl
	mustWork.MayFail = false
	if err := evaluateSeccomp(filters, testArch, 0x1000, []SeccompCall{mustWork}); !errors.Is(err, ErrSeccomp) {
		t.Errorf("errno for a call that must work: %v", err)
	}
	// Another architecture's number is killed by the arch check.
	if err := evaluateSeccomp(filters, unix.AUDIT_ARCH_AARCH64, 0x1000, []SeccompCall{mprotect}); !errors.Is(err, ErrSeccomp) {
		t.Errorf("wrong arch: %v", err)
	}
	// With several filters the most restrictive action wins.
	allowAll := []bpf.Instruction{bpf.RetConstant{Val: retAllow}}
	errnoAll := []bpf.Instruction{bpf.RetConstant{Val: retErrno1}}
	if err := evaluateSeccomp([][]bpf.Instruction{allowAll, errnoAll}, testArch, 0, []SeccompCall{mprotect}); !errors.Is(err, ErrSeccomp) {
		t.Errorf("errno filter after an allow-all one: %v", err)
	}
	// What the machine does not evaluate is refused, never guessed.
	negate := []bpf.Instruction{bpf.LoadAbsolute{Off: 0, Size: 4}, bpf.NegateA{}, bpf.RetA{}}
	if err := evaluateSeccomp([][]bpf.Instruction{negate}, testArch, 0, []SeccompCall{mprotect}); !errors.Is(err, ErrSeccompUnknown) {
		t.Errorf("unevaluated instruction: %v", err)
	}
	outside := []bpf.Instruction{bpf.LoadAbsolute{Off: 64, Size: 4}, bpf.RetA{}}
	if err := evaluateSeccomp([][]bpf.Instruction{outside}, testArch, 0, []SeccompCall{mprotect}); !errors.Is(err, ErrSeccompUnknown) {
		t.Errorf("load outside seccomp_data: %v", err)
	}
}

// TestSeccompDataWords: the high word of a 64-bit argument is at +4, as
// the kernel lays it out on a little-endian machine.
func TestSeccompDataWords(t *testing.T) {
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 16 + 8 + 4, Size: 4}, // args[1], high word
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x12345678, SkipTrue: 1},
		bpf.RetConstant{Val: retKill},
		bpf.LoadAbsolute{Off: 16 + 8, Size: 4}, // args[1], low word
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 1, SkipTrue: 1},
		bpf.RetConstant{Val: retKill},
		bpf.RetConstant{Val: retAllow},
	}
	call := SeccompCall{Name: "x", Nr: 1, Args: [6]uint64{0, 0x12345678_00000001}}
	if err := evaluateSeccomp([][]bpf.Instruction{prog}, testArch, 0x1_9abcdef0, []SeccompCall{call}); err != nil {
		t.Error(err)
	}
}

// TestSeccompInstructionPointer: a filter that tests where a call comes
// from cannot be judged for calls made from several places.
func TestSeccompInstructionPointer(t *testing.T) {
	for _, off := range []uint32{8, 12} {
		prog := []bpf.Instruction{
			bpf.LoadAbsolute{Off: off, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x1000, SkipTrue: 1},
			bpf.RetConstant{Val: retKill},
			bpf.RetConstant{Val: retAllow},
		}
		err := evaluateSeccomp([][]bpf.Instruction{prog}, testArch, 0x1000, []SeccompCall{{Name: "mmap", Nr: unix.SYS_MMAP}})
		if !errors.Is(err, ErrSeccompUnknown) {
			t.Errorf("filter loading offset %d: %v", off, err)
		}
	}
}

// FuzzSeccompProgram: any program read back from the kernel is evaluated
// or refused, never a panic.
func FuzzSeccompProgram(f *testing.F) {
	raw, _ := bpf.Assemble(killFixedNoreplace)
	var seed []byte
	for _, r := range raw {
		seed = append(seed, byte(r.Op), byte(r.Op>>8), r.Jt, r.Jf, byte(r.K), byte(r.K>>8), byte(r.K>>16), byte(r.K>>24))
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		var prog []bpf.Instruction
		for len(b) >= 8 {
			r := bpf.RawInstruction{Op: uint16(b[0]) | uint16(b[1])<<8, Jt: b[2], Jf: b[3], K: uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24}
			prog = append(prog, r.Disassemble())
			b = b[8:]
		}
		evaluateSeccomp([][]bpf.Instruction{prog}, testArch, 0, []SeccompCall{{Name: "mmap", Nr: unix.SYS_MMAP}})
	})
}

// TestSeccompTraceForCallThatMayFail: SECCOMP_RET_TRACE with no tracer
// asking for seccomp events (the engine is the tracer, without
// PTRACE_O_TRACESECCOMP) fails the call with ENOSYS, which a call that may
// fail survives; one that must work is refused.
func TestSeccompTraceForCallThatMayFail(t *testing.T) {
	traceAll := []bpf.Instruction{bpf.RetConstant{Val: 0x7ff00000 | 7}}
	prctl := SeccompCall{Name: "prctl", Nr: unix.SYS_PRCTL, MayFail: true}
	if err := evaluateSeccomp([][]bpf.Instruction{traceAll}, testArch, 0, []SeccompCall{prctl}); err != nil {
		t.Errorf("trace action for a call that may fail: %v", err)
	}
	mustWork := prctl
	mustWork.MayFail = false
	if err := evaluateSeccomp([][]bpf.Instruction{traceAll}, testArch, 0, []SeccompCall{mustWork}); !errors.Is(err, ErrSeccomp) || !strings.Contains(err.Error(), "SECCOMP_RET_TRACE") {
		t.Errorf("trace action for a call that must work: %v", err)
	}
}
