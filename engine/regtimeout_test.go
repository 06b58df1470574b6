package engine_test

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/proc"
)

// registrySrc is a target whose unwinder registry (stand-ins linked into
// the executable, where the engine also looks) runs body and counts the
// registrations it completed.
func registrySrc(body string) string {
	return `#include <stdio.h>
#include <time.h>
#include <unistd.h>
static volatile int calls;
__attribute__((noipa)) int compute(int x) { return x * 2; }
void __register_frame_info(const void *begin, void *ob) {
	(void)begin; (void)ob;
` + body + `
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
}

// A registry call that takes longer than the engine's call limit, and is
// still running when the engine gives up on it: long enough after the
// limit for a retry to find it there, even in the emulated arm64 VM,
// where an apply's preparation takes seconds.
var slowRegistrySrc = registrySrc(`	struct timespec a = {2, 500000000}, b = {6, 0};
	nanosleep(&a, NULL);
	nanosleep(&b, NULL);`)

// TestRegistrationTimeoutKeepsMemory: when the registration call times
// out, the thread still runs the call stub on the stub's stack; the patch
// memory must stay mapped, or the thread crashes when the call returns.
func TestRegistrationTimeoutKeepsMemory(t *testing.T) {
	fixture.Require(t)
	bin := buildSource(t, "slowreg", slowRegistrySrc)
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
var blockedRegistrySrc = registrySrc(`	struct timespec a = {6, 0};
	nanosleep(&a, NULL);`)

// TestRegistrationBlockedCall: the call limit holds while the callee is
// blocked in one system call, and the call, let go, completes.
func TestRegistrationBlockedCall(t *testing.T) {
	fixture.Require(t)
	bin := buildSource(t, "blockedreg", blockedRegistrySrc)
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

// A target whose main thread waits in a signal handler on an alternate
// stack, and whose registry stand-in reports the thread it runs on.
const altStackRegistrySrc = `#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((noipa)) int compute(int x) { return x * 2; }
void __register_frame_info(const void *begin, void *ob) {
	(void)begin; (void)ob;
	printf("registered on %d\n", gettid());
}
void *__deregister_frame_info(const void *begin) { (void)begin; return 0; }
static void handler(int sig) {
	(void)sig;
	printf("in handler on %d\n", gettid());
	sleep(2);
}
static void *worker(void *arg) {
	(void)arg;
	for (;;) {
		printf("compute=%d\n", compute(21));
		usleep(10000);
	}
	return NULL;
}
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16};
	sigaltstack(&ss, NULL);
	struct sigaction sa = {.sa_handler = handler, .sa_flags = SA_ONSTACK};
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	printf("main %d\n", gettid());
	for (;;)
		pause();
}
`

// TestRemoteCallAvoidsAlternateStack: a thread in a handler on its
// alternate signal stack is not used for the registration call, where a
// signal during the call would be written over the handler's frames. Two
// layers keep it out: its stack cannot be unwound within one mapping, and
// its stack pointer is not on a thread stack. (The switch then waits for
// the handler to return: a thread on an alternate stack counts as busy.)
func TestRemoteCallAvoidsAlternateStack(t *testing.T) {
	fixture.Require(t)
	bin := buildSource(t, "altstack", altStackRegistrySrc)
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	if err := syscall.Kill(p.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	inHandler := p.WaitFor(t, 0, "in handler on ", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "alt-stack", "compute=compute_v2")
	apply(t, p.PID, spec, 10*time.Second)
	registered := p.WaitFor(t, 0, "registered on ", waitLine)
	if strings.TrimPrefix(registered, "registered on ") == strings.TrimPrefix(inHandler, "in handler on ") {
		t.Errorf("the registration ran on the thread in the handler on its alternate stack (%q)", registered)
	}
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
}
