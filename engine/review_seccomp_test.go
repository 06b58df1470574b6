package engine_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/proc"
)

// writeSource writes a test's C source into dir.
func writeSource(t *testing.T, dir, name, src string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const seccompPrelude = `#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif
#define LOAD(field) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, field))
static void confine(struct sock_filter *f, unsigned short n) {
	struct sock_fprog prog = {n, f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
		printf("seccomp: %s\n", strerror(errno));
		exit(1);
	}
}
`

// A target whose threads differ: the main thread never leaves a function
// named like the allocator's, so the engine runs no code in it; the first
// worker has a filter of its own (no TSYNC) that kills the process on
// getpid, the call stub's marker; the second worker is free.
const perThreadSeccompSrc = seccompPrelude + `
static volatile int calls, ready;
__attribute__((noipa)) int compute(int x) { return x * 2; }
void __register_frame_info(const void *begin, void *ob) { (void)begin; (void)ob; calls++; }
void *__deregister_frame_info(const void *begin) { (void)begin; calls++; return 0; }
__attribute__((noipa)) static void _int_free(void) {
	for (;;)
		pause();
}
static void *confined(void *arg) {
	(void)arg;
	struct sock_filter f[] = {
		LOAD(arch),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		LOAD(nr),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getpid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	confine(f, sizeof f / sizeof f[0]);
	ready = 1;
	for (;;)
		pause();
	return NULL;
}
static void *worker(void *arg) {
	(void)arg;
	for (;;) {
		printf("compute=%d calls=%d\n", compute(21), calls);
		usleep(10000);
	}
	return NULL;
}
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_t a, b;
	pthread_create(&a, NULL, confined, NULL);
	while (!ready)
		usleep(1000);
	pthread_create(&b, NULL, worker, NULL);
	_int_free();
}
`

// TestRemoteCallThreadSeccomp: the thread a remote call runs in is checked
// against its own seccomp filter, which may differ from the one checked
// for the injected system calls: a thread whose filter would kill the
// process on the stub's system calls is passed over.
func TestRemoteCallThreadSeccomp(t *testing.T) {
	fixture.Require(t)
	bin := buildSource(t, "threadseccomp", perThreadSeccompSrc)
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42 calls=0", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "thread-seccomp", "compute=compute_v2")
	res, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 5 * time.Second})
	if !p.Alive() {
		t.Fatalf("the target died (apply: %v)", err)
	}
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !res.UnwindRegistered {
		t.Fatal("the patch's unwind tables were not registered")
	}
	p.WaitFor(t, p.Mark(), "compute=63 calls=1", waitLine)
	revert(t, p.PID, "thread-seccomp")
	p.WaitFor(t, p.Mark(), "compute=42 calls=2", waitLine)
	if !p.Alive() {
		t.Fatal("the target died")
	}
}

// A single-threaded target whose filter kills the process when a memory
// protection is made writable, as a strict W^X profile might; the program
// itself never does that once confined.
const killWritableProtectSrc = seccompPrelude + `
__attribute__((noipa)) int compute(int x) {
	if (x > 1000)
		printf("large input %d\n", x);
	return x * 2;
}
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sock_filter f[] = {
		LOAD(arch),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		LOAD(nr),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 0, 3),
		LOAD(args[2]),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_WRITE, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	confine(f, sizeof f / sizeof f[0]);
	for (;;) {
		printf("compute=%d\n", compute(21));
		usleep(10000);
	}
}
`

// A patch with writable data, which the engine protects read-write.
const countingPatchSrc = `static int count = 1;
int compute_v2(int x) { count++; return x * 3 + (count < 0); }
`

// TestSeccompWritableProtect: the engine's mprotect of the patch's
// writable data goes through the filter like its other calls, so a filter
// that kills on it makes the apply refuse, with the target alive.
func TestSeccompWritableProtect(t *testing.T) {
	fixture.Require(t)
	bin := buildSource(t, "killwprot", killWritableProtectSrc)
	dir := t.TempDir()
	psrc := writeSource(t, dir, "counting_v2.c", countingPatchSrc)
	obj := filepath.Join(dir, "counting_v2.o")
	fixture.GCC(t, "-c", "-O2", "-fPIC", "-o", obj, psrc)
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	spec := fixture.Pack(t, bin, obj, "wprot", "compute=compute_v2")
	_, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 5 * time.Second})
	if !p.Alive() {
		t.Fatalf("the target died (apply: %v)", err)
	}
	if !errors.Is(err, proc.ErrSeccomp) || !strings.Contains(err.Error(), "mprotect") {
		t.Fatalf("want a seccomp refusal naming mprotect, got %v", err)
	}
	t.Logf("refused: %v", err)
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
}
