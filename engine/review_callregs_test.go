package engine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// A target whose unwinder registry (stand-ins linked into the executable)
// clobbers a caller-saved register, as any callee may, while its only
// thread keeps a value in that register across a system call, which the
// kernel preserves. On arm64 the register is x7: the kernel discards a
// tracer's write to x7 at a syscall stop (it uses x7 to say entry or
// exit), so registers put back there lose it.
const clobberRegistrySrc = `#include <stdio.h>
#include <time.h>
#include <sys/syscall.h>
static volatile int calls;
__attribute__((noipa)) int compute(int x) { return x * 2; }
void __register_frame_info(const void *begin, void *ob) {
	(void)begin; (void)ob;
#if defined(__aarch64__)
	__asm__ volatile("mov x7, #0x999" ::: "x7");
#elif defined(__x86_64__)
	__asm__ volatile("mov $0x999, %%r9" ::: "r9");
#endif
	calls++;
}
void *__deregister_frame_info(const void *begin) {
	(void)begin;
#if defined(__aarch64__)
	__asm__ volatile("mov x7, #0x999" ::: "x7");
#elif defined(__x86_64__)
	__asm__ volatile("mov $0x999, %%r9" ::: "r9");
#endif
	calls++;
	return 0;
}
/* Sleeps 10 ms with v in a register the system call does not use. */
__attribute__((noipa)) static long sleep_keeping(long v) {
	struct timespec ts = {0, 10000000};
#if defined(__aarch64__)
	register long x0 __asm__("x0") = (long)&ts;
	register long x1 __asm__("x1") = 0;
	register long x8 __asm__("x8") = SYS_nanosleep;
	register long x7 __asm__("x7") = v;
	__asm__ volatile("svc #0" : "+r"(x0), "+r"(x7) : "r"(x1), "r"(x8) : "memory");
	return x7;
#elif defined(__x86_64__)
	long ret;
	register long r9 __asm__("r9") = v;
	__asm__ volatile("syscall" : "=a"(ret), "+r"(r9) : "0"((long)SYS_nanosleep), "D"(&ts), "S"(0L) : "rcx", "r11", "memory");
	return r9;
#endif
}
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (long i = 0;; i++) {
		long v = 0x100 + (i & 0xff);
		long got = sleep_keeping(v);
		if (got != v)
			printf("register changed: %#lx, want %#lx\n", got, v);
		if (i % 10 == 0)
			printf("compute=%d calls=%d\n", compute(21), calls);
	}
}
`

// TestRemoteCallKeepsRegisters: after a remote call (unwind-table
// registration, then deregistration on revert) the thread goes on with
// every register it had, including one the callee clobbered.
func TestRemoteCallKeepsRegisters(t *testing.T) {
	fixture.Require(t)
	bin := buildSource(t, "clobberreg", clobberRegistrySrc)
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42 calls=0", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "clobber-reg", "compute=compute_v2")
	res := apply(t, p.PID, spec, 10*time.Second)
	if !res.UnwindRegistered {
		t.Fatal("the patch's unwind tables were not registered")
	}
	p.WaitFor(t, p.Mark(), "compute=63 calls=1", waitLine)
	revert(t, p.PID, "clobber-reg")
	p.WaitFor(t, p.Mark(), "compute=42 calls=2", waitLine)
	// A few more rounds of the loop after the last call.
	mark := p.Mark()
	p.WaitFor(t, mark, "compute=42 calls=2", waitLine)
	p.WaitFor(t, p.Mark(), "compute=42 calls=2", waitLine)
	for _, l := range p.Lines() {
		if strings.Contains(l, "register changed") {
			t.Errorf("the target saw a register change across the engine's calls: %s", l)
		}
	}
	if !p.Alive() {
		t.Fatal("target died")
	}
}
