package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.PID))
	if err != nil {
		return 0, err
	}
	align = max(align, 1)
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != "[vdso]" {
			continue
		}
		start, end, ok := parseRange(f[0])
		if !ok || end <= start || end-start > 1<<20 {
			break
		}
		img := make([]byte, end-start)
		if _, err := p.ReadAt(img, start); err != nil {
			return 0, fmt.Errorf("read vdso: %w", err)
		}
		for off := 0; ; off++ {
			i := bytes.Index(img[off:], seq)
			if i < 0 {
				break
			}
			if at := start + uint64(off+i); at%align == 0 {
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
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no SigBlk in status")
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
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.PID))
	if err != nil {
		return false
	}
	var prevEnd uint64
	var prevGuard bool
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		start, end, ok := parseRange(f[0])
		if !ok {
			continue
		}
		if sp > start && sp <= end {
			path := ""
			if len(f) > 5 {
				path = f[5]
			}
			stack := path == "[stack]" || (path == "" && f[4] == "0" && strings.HasPrefix(f[1], "rw") && prevGuard && prevEnd == start)
			return stack && lo >= start
		}
		prevEnd, prevGuard = end, strings.HasPrefix(f[1], "---")
	}
	return false
}

func parseRange(s string) (start, end uint64, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(a, 16, 64)
	y, err2 := strconv.ParseUint(b, 16, 64)
	return x, y, err1 == nil && err2 == nil
}
