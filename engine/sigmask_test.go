package engine_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/proc"
)

// The main thread keeps SIGUSR1 blocked and waits in ppoll with it
// unblocked: while it waits, its mask is ppoll's, not its own.
const ppollSrc = `#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
__attribute__((noipa)) int compute(int x) { return x * 2 + (x > 1000 ? x / 3 : 0); }
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	sigset_t usr1, none, cur;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigemptyset(&none);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	for (;;) {
		struct timespec ts = {0, 100 * 1000 * 1000};
		ppoll(NULL, 0, &ts, &none);
		sigprocmask(SIG_BLOCK, NULL, &cur);
		printf("compute=%d %s\n", compute(21), sigismember(&cur, SIGUSR1) ? "mask kept" : "mask lost");
	}
}
`

// TestEngineKilledDuringRemoteSyscallKeepsSignalMask: the engine dies
// while the thread it borrowed from ppoll runs an injected call. The
// thread must come back with its own signal mask, not ppoll's.
func TestEngineKilledDuringRemoteSyscallKeepsSignalMask(t *testing.T) {
	fixture.Require(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "ppoll.c")
	if err := os.WriteFile(src, []byte(ppollSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ppoll")
	fixture.GCC(t, "-O2", "-g", "-o", bin, src)
	file := packFile(t, bin, object(t, "basic", "compute_v2.c"), "ppoll-fix", "compute=compute_v2")
	for _, fault := range []string{proc.FaultMidSyscall, proc.FaultSyscallEntered} {
		t.Run(fault, func(t *testing.T) {
			p := fixture.Start(t, bin)
			p.WaitFor(t, 0, "compute=42 mask kept", waitLine)
			killedEngineInCall(t, fault, p.PID, file, "ppoll-fix")
			mark := p.Mark()
			p.WaitFor(t, mark, "compute=42", waitLine)
			p.WaitFor(t, mark+2, "compute=42", waitLine)
			for _, l := range p.Lines() {
				if strings.Contains(l, "mask lost") {
					t.Fatalf("the thread lost its signal mask: %s", l)
				}
			}
		})
	}
}

// TestEngineKilledAtRestartedSyscallEntry: the engine dies once the
// injected call has taken over the entry of a thread's restarted sleep.
// The thread returns through the landing frame and sleeps again; the
// blocked calls of the other threads see nothing either.
func TestEngineKilledAtRestartedSyscallEntry(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "blocking", "target.c", "blocking")
	file := packFile(t, bin, object(t, "blocking", "compute_v2.c"), "block-fix", "compute=compute_v2")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "reader blocking", waitLine)
	p.WaitFor(t, 0, "compute=42", waitLine)
	killedEngineInCall(t, proc.FaultSyscallEntered, p.PID, file, "block-fix")
	mark := p.Mark()
	p.WaitFor(t, mark, "compute=42", waitLine)
	p.WaitFor(t, mark+1, "compute=42", waitLine)
	p.Stdin.Write([]byte("hello\n"))
	p.WaitFor(t, 0, "read 6 bytes: hello", waitLine)
	p.WaitFor(t, 0, "sem_wait woke", waitLine)
	for _, l := range p.Lines() {
		if strings.Contains(l, "interrupted") || strings.Contains(l, "failed") {
			t.Errorf("a blocked call saw the engine die: %s", l)
		}
	}
}

// killedEngineInCall is killedEngine for an apply whose fault point is only
// passed when the thread it borrows is inside a restartable system call,
// as the tests' threads nearly always are. An apply that went through
// instead is reverted and tried again.
func killedEngineInCall(t *testing.T, fault string, pid int, file, id string) {
	t.Helper()
	for i := 0; i < 5; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "HOTPATCH_TEST_ENGINE=apply", "HOTPATCH_FAULT="+fault,
			"HOTPATCH_TEST_PID="+strconv.Itoa(pid), "HOTPATCH_TEST_FILE="+file)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
			return
		}
		if err != nil {
			t.Fatalf("engine should have died at %s, got %v\n%s", fault, err, out)
		}
		revert(t, pid, id)
	}
	t.Fatalf("the engine never reached %s", fault)
}
