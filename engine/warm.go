package engine

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/hotpatch/hotpatch/consistency"
	"github.com/hotpatch/hotpatch/target"
)

// warmUnwinder runs the consistency check once, before the pause, on each
// thread as /proc shows it without stopping it: a thread blocked in a
// system call exposes its stack pointer and PC in /proc/PID/task/TID/syscall.
// The result is thrown away (the threads keep running); what stays is the
// unwinder's per-module cache of frame rules for the code where the threads
// wait, which the real check inside the pause then finds ready. Measured
// with 16 threads (BenchmarkApply): the in-pause check's median drops from
// about 210 µs to about 150 µs.
func (s *session) warmUnwinder(mods *consistency.Modules, ranges []consistency.Range) {
	ua, err := s.unwindArch(nil)
	if err != nil {
		return
	}
	tids, err := s.p.Threads()
	if err != nil {
		return
	}
	maps, err := target.ReadMaps(s.pid)
	if err != nil {
		return
	}
	var threads []consistency.Thread
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", s.pid, tid))
		if err != nil {
			continue
		}
		// "nr arg1 ... arg6 sp pc" while in a call; "running" otherwise.
		f := strings.Fields(string(b))
		if len(f) < 3 {
			continue
		}
		sp, err1 := strconv.ParseUint(strings.TrimPrefix(f[len(f)-2], "0x"), 16, 64)
		pc, err2 := strconv.ParseUint(strings.TrimPrefix(f[len(f)-1], "0x"), 16, 64)
		if err1 != nil || err2 != nil || sp == 0 {
			continue
		}
		regs := make([]uint64, ua.NumRegs)
		if int(ua.SP) < len(regs) {
			regs[ua.SP] = sp
		}
		t := consistency.Thread{TID: tid, Regs: regs, PC: pc, SP: sp}
		t.StackLo, t.StackHi = stackOf(maps, sp)
		if t.StackHi != 0 {
			threads = append(threads, t)
		}
	}
	consistency.Check(ua, mods, s.p, threads, ranges)
}
