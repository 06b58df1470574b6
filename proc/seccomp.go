package proc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Seccomp. A thread confined by a seccomp filter runs the engine's injected
// system calls through that filter like any other: a filter that kills on
// mmap would kill the target instead of refusing the patch. So before the
// first injected call, the engine reads the thread's filters
// (PTRACE_SECCOMP_GET_FILTER) and evaluates them, with x/net/bpf's
// classic-BPF machine, for every call it will make.

var (
	// ErrSeccomp means the target's seccomp filter would not let a system
	// call the engine needs run.
	ErrSeccomp = errors.New("the target's seccomp filter forbids a system call the engine needs")
	// ErrSeccompUnknown means the target has a seccomp filter that cannot
	// be read or evaluated, so what it does to injected calls is unknown.
	ErrSeccompUnknown = errors.New("the target's seccomp filter cannot be evaluated")
)

// SeccompCall is a system call the engine will inject.
type SeccompCall struct {
	Name string
	Nr   uint64
	Args [6]uint64
	// MayFail: the engine copes with the call failing (an errno), but
	// not with the thread or process being killed.
	MayFail bool
}

// Seccomp actions (SECCOMP_RET_*), by precedence: as signed 32-bit
// numbers, a lower action wins over a higher one.
const (
	seccompActionMask = 0xffff0000
	seccompRetErrno   = 0x00050000
	seccompRetTrace   = 0x7ff00000
	seccompRetLog     = 0x7ffc0000
	seccompRetAllow   = 0x7fff0000
	seccompDataSize   = 64
)

// CheckSeccomp reports whether every call would pass the seccomp filters
// of the stopped thread t when made at ip. It returns nil for a thread
// without filters.
func (p *Process) CheckSeccomp(t *Thread, auditArch uint32, ip uint64, calls []SeccompCall) error {
	mode, err := p.seccompMode(t.TID)
	if err != nil || mode == 0 {
		return nil // no seccomp field: a kernel without seccomp
	}
	if mode == 1 {
		return fmt.Errorf("%w: thread %d is in strict seccomp mode (read, write and exit only)", ErrSeccomp, t.TID)
	}
	var filters [][]bpf.Instruction
	err = p.do(func() error {
		var err error
		filters, err = seccompFilters(t.TID)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: thread %d: %v; it may kill the process on the engine's system calls", ErrSeccompUnknown, t.TID, err)
	}
	return evaluateSeccomp(filters, auditArch, ip, calls)
}

// evaluateSeccomp runs every filter on every call, as the kernel does.
func evaluateSeccomp(filters [][]bpf.Instruction, auditArch uint32, ip uint64, calls []SeccompCall) error {
	vms := make([]*bpf.VM, len(filters))
	for i, f := range filters {
		if err := seccompProgramOK(f); err != nil {
			return fmt.Errorf("%w: filter %d: %v", ErrSeccompUnknown, i, err)
		}
		vm, err := bpf.NewVM(f)
		if err != nil {
			return fmt.Errorf("%w: filter %d: %v", ErrSeccompUnknown, i, err)
		}
		vms[i] = vm
	}
	for _, c := range calls {
		data := seccompData(c, auditArch, ip)
		action := uint32(seccompRetAllow)
		for i, vm := range vms {
			ret, err := vm.Run(data)
			if err != nil {
				return fmt.Errorf("%w: filter %d on %s: %v", ErrSeccompUnknown, i, c.Name, err)
			}
			if a := uint32(ret) & seccompActionMask; int32(a) < int32(action) {
				action = a
			}
		}
		switch {
		case action == seccompRetAllow || action == seccompRetLog:
		case action == seccompRetErrno && c.MayFail:
		case action == seccompRetTrace && c.MayFail:
			// The engine traces the thread without PTRACE_O_TRACESECCOMP,
			// and no other tracer can be attached: the kernel fails the
			// call with ENOSYS.
		default:
			return fmt.Errorf("%w: %s would get %s", ErrSeccomp, c.Name, seccompActionName(action))
		}
	}
	return nil
}

// seccompData lays out struct seccomp_data for the VM. The kernel loads
// native-endian 32-bit words; x/net/bpf loads big-endian ones, so every
// word is stored byte-swapped.
func seccompData(c SeccompCall, auditArch uint32, ip uint64) []byte {
	words := make([]uint32, 0, seccompDataSize/4)
	words = append(words, uint32(c.Nr), auditArch, uint32(ip), uint32(ip>>32))
	for _, a := range c.Args {
		words = append(words, uint32(a), uint32(a>>32))
	}
	b := make([]byte, 0, seccompDataSize)
	for _, w := range words {
		b = binary.BigEndian.AppendUint32(b, w)
	}
	return b
}

// seccompProgramOK accepts only what the kernel lets a seccomp filter
// contain (seccomp_check_filter), which is also what the VM implements
// without panicking.
func seccompProgramOK(prog []bpf.Instruction) error {
	for i, ins := range prog {
		switch in := ins.(type) {
		case bpf.LoadAbsolute:
			if in.Size != 4 || in.Off%4 != 0 || in.Off >= seccompDataSize {
				return fmt.Errorf("instruction %d loads outside seccomp_data", i)
			}
			if in.Off == 8 || in.Off == 12 {
				// The engine's calls run from several places (an existing
				// system call instruction, the landing, a call stub not
				// yet mapped): one address cannot stand for them all.
				return fmt.Errorf("instruction %d tests the calling address", i)
			}
		case bpf.LoadExtension:
			if in.Num != bpf.ExtLen {
				return fmt.Errorf("instruction %d: extension %d", i, in.Num)
			}
		case bpf.LoadConstant, bpf.LoadScratch, bpf.StoreScratch, bpf.ALUOpConstant, bpf.ALUOpX,
			bpf.Jump, bpf.JumpIf, bpf.JumpIfX, bpf.RetA, bpf.RetConstant, bpf.TAX, bpf.TXA:
		default:
			return fmt.Errorf("instruction %d (%v) is not evaluated", i, ins)
		}
	}
	return nil
}

func seccompActionName(a uint32) string {
	switch a {
	case 0x80000000:
		return "SECCOMP_RET_KILL_PROCESS"
	case 0:
		return "SECCOMP_RET_KILL_THREAD"
	case 0x00030000:
		return "SECCOMP_RET_TRAP"
	case seccompRetErrno:
		return "SECCOMP_RET_ERRNO"
	case 0x7fc00000:
		return "SECCOMP_RET_USER_NOTIF"
	case seccompRetTrace:
		return "SECCOMP_RET_TRACE"
	}
	return fmt.Sprintf("seccomp action %#x", a)
}

// seccompMode reads the thread's seccomp mode (0 none, 1 strict, 2 filter).
func (p *Process) seccompMode(tid int) (int, error) {
	v, err := statusField(p.PID, tid, "Seccomp")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(v)
}

// seccompFilters reads the filters of stopped thread tid, the most
// recently installed first. It must run on the ptrace thread.
func seccompFilters(tid int) ([][]bpf.Instruction, error) {
	var out [][]bpf.Instruction
	for index := 0; ; index++ {
		n, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(index), 0, 0, 0)
		if e == unix.ENOENT && index > 0 {
			return out, nil // past the last filter
		}
		if e != 0 {
			return nil, fmt.Errorf("PTRACE_SECCOMP_GET_FILTER: %w (it needs CAP_SYS_ADMIN and CONFIG_CHECKPOINT_RESTORE)", e)
		}
		if n == 0 || n > 4096 { // BPF_MAXINSNS
			return nil, fmt.Errorf("filter %d has %d instructions", index, n)
		}
		raw := make([]unix.SockFilter, n)
		if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(index), uintptr(unsafe.Pointer(&raw[0])), 0, 0); e != 0 {
			return nil, fmt.Errorf("PTRACE_SECCOMP_GET_FILTER: %w", e)
		}
		prog := make([]bpf.Instruction, n)
		for i, r := range raw {
			prog[i] = bpf.RawInstruction{Op: r.Code, Jt: r.Jt, Jf: r.Jf, K: r.K}.Disassemble()
		}
		out = append(out, prog)
	}
}
