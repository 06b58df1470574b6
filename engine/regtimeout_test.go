package engine_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/proc"
)

// A target whose unwinder registry (stand-ins linked into the executable,
// where the engine also looks) takes longer than the engine's call limit,
// and is still running when the engine gives up on it: long enough after
// the limit for a retry to find it there, even in the emulated arm64 VM,
// where an apply's preparation takes seconds.
const slowRegistrySrc = `#include <stdio.h>
#include <time.h>
#include <unistd.h>
static volatile int calls;
__attribute__((noipa)) int compute(int x) { return x * 2; }
void __register_frame_info(const void *begin, void *ob) {
	(void)begin; (void)ob;
	struct timespec a = {2, 500000000}, b = {6, 0};
	nanosleep(&a, NULL);
	nanosleep(&b, NULL);
	calls++;
}
void *__deregister_frame_info(const void *begin) { (void)begin; return 0; }
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("compute=%d calls=%d\n", compute(21), calls);
		usleep(10000);
	}
}
`

// TestRegistrationTimeoutKeepsMemory: when the registration call times
// out, the thread still runs the call stub on the stub's stack; the patch
// memory must stay mapped, or the thread crashes when the call returns.
func TestRegistrationTimeoutKeepsMemory(t *testing.T) {
	fixture.Require(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "slowreg.c")
	if err := os.WriteFile(src, []byte(slowRegistrySrc), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "slowreg")
	fixture.GCC(t, "-O2", "-g", "-o", bin, src)
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42 calls=0", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "slow-reg", "compute=compute_v2")
	_, err := engine.Apply(t.Context(), p.PID, spec, engine.Options{Timeout: 5 * time.Second})
	if !errors.Is(err, engine.ErrUnwindRegistration) {
		t.Fatalf("want ErrUnwindRegistration after the call timed out, got %v", err)
	}
	t.Logf("refused: %v", err)
	// A retry while that call still runs must not collect its memory as a
	// leftover.
	if _, err := engine.Apply(t.Context(), p.PID, spec, engine.Options{Timeout: time.Second}); err == nil {
		t.Error("retry succeeded while the only thread is inside the registry")
	}
	// The call finishes on its own, in the old code's process.
	p.WaitFor(t, p.Mark(), "compute=42 calls=1", 2*waitLine)
	if !p.Alive() {
		t.Fatal("target died after the registration call it was left to finish")
	}
}

// A registry whose one call blocks (a single long sleep): the engine sees
// no stop to check its limit at, so it must interrupt the call itself.
const blockedRegistrySrc = `#include <stdio.h>
#include <time.h>
#include <unistd.h>
static volatile int calls;
__attribute__((noipa)) int compute(int x) { return x * 2; }
void __register_frame_info(const void *begin, void *ob) {
	(void)begin; (void)ob;
	struct timespec a = {6, 0};
	nanosleep(&a, NULL);
	calls++;
}
void *__deregister_frame_info(const void *begin) { (void)begin; return 0; }
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		printf("compute=%d calls=%d\n", compute(21), calls);
		usleep(10000);
	}
}
`

// TestRegistrationBlockedCall: the call limit holds while the callee is
// blocked in one system call, and the call, let go, completes.
func TestRegistrationBlockedCall(t *testing.T) {
	fixture.Require(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "blockedreg.c")
	if err := os.WriteFile(src, []byte(blockedRegistrySrc), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "blockedreg")
	fixture.GCC(t, "-O2", "-g", "-o", bin, src)
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42 calls=0", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "blocked-reg", "compute=compute_v2")
	start := time.Now()
	_, err := engine.Apply(t.Context(), p.PID, spec, engine.Options{Timeout: 5 * time.Second})
	took := time.Since(start)
	if !errors.Is(err, engine.ErrUnwindRegistration) || !errors.Is(err, proc.ErrCallTimeout) {
		t.Fatalf("want a registration call timeout, got %v", err)
	}
	// The limit is 2 s; the sleep is 6 s.
	if took > 5*time.Second {
		t.Errorf("apply returned after %v: the call limit did not hold while the callee was blocked", took)
	}
	t.Logf("refused after %v: %v", took.Round(time.Millisecond), err)
	p.WaitFor(t, p.Mark(), "compute=42 calls=1", 3*waitLine)
	if !p.Alive() {
		t.Fatal("target died after the registration call it was left to finish")
	}
}
