package proc

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hotpatch/hotpatch/target"
)

// Helpers the landing frames of both architectures use (see
// landing_linux_*.go).

// ErrNotFound means a byte sequence is not in the process's vDSO.
var ErrNotFound = errors.New("not found")

// FindInVDSO returns the address of the first align-aligned occurrence of
// seq in the process's vDSO. arm64's C library has no signal return
// trampoline of its own: signals return through the vDSO's
// __kernel_rt_sigreturn.
func (p *Process) FindInVDSO(seq []byte, align uint64) (uint64, error) {
	maps, err := target.ReadMaps(p.PID)
	if err != nil {
		return 0, err
	}
	align = max(align, 1)
	for _, m := range maps {
		if m.Path != "[vdso]" || m.End <= m.Start || m.End-m.Start > 1<<20 {
			continue
		}
		img := make([]byte, m.End-m.Start)
		if _, err := p.ReadAt(img, m.Start); err != nil {
			return 0, fmt.Errorf("read vdso: %w", err)
		}
		for off := 0; ; off++ {
			i := bytes.Index(img[off:], seq)
			if i < 0 {
				break
			}
			if at := m.Start + uint64(off+i); at%align == 0 {
				return at, nil
			}
			off += i
		}
		break
	}
	return 0, fmt.Errorf("%x in the vdso: %w", seq, ErrNotFound)
}

// blockedSignals reads the thread's signal mask.
func blockedSignals(pid, tid int) (uint64, error) {
	v, err := statusField(pid, tid, "SigBlk")
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(v, 16, 64)
}

// OnThreadStack reports whether the stopped thread t runs on its thread
// stack, and not on a stack of its own making: a signal handler's
// alternate stack, which a signal delivered during a remote call would be
// written onto from its top, over the interrupted handler's frames.
func (p *Process) OnThreadStack(t *Thread) bool {
	sp := t.Regs.SP()
	return p.onThreadStack(sp, sp)
}

// onThreadStack reports whether [lo, sp) lies in a real thread stack: the
// main thread's [stack], or an anonymous writable mapping that starts right
// above a guard page, as glibc lays out pthread stacks. Anything else (a
// signal stack carved out of the heap, say) may have live data below the
// stack pointer, so no frame is written there.
func (p *Process) onThreadStack(sp, lo uint64) bool {
	maps, err := target.ReadMaps(p.PID)
	if err != nil {
		return false
	}
	for k, m := range maps {
		if sp > m.Start && sp <= m.End {
			guarded := k > 0 && maps[k-1].End == m.Start && strings.HasPrefix(maps[k-1].Perms, "---")
			stack := m.Path == "[stack]" || (m.Path == "" && m.Inode == 0 && strings.HasPrefix(m.Perms, "rw") && guarded)
			return stack && lo >= m.Start
		}
	}
	return false
}
