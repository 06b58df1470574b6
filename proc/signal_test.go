package proc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/proc"
	"github.com/hotpatch/hotpatch/target"
)

// A program that counts the SIGUSR1 it receives.
const counterSrc = `#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static volatile sig_atomic_t got;
static void on_usr1(int s) { (void)s; got++; }
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	printf("ready\n");
	for (;;) {
		usleep(10000);
		printf("usr1=%d\n", (int)got);
	}
}
`

func startCounter(t *testing.T, landing bool) (*fixture.Proc, *proc.Process) {
	t.Helper()
	fixture.Require(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "counter.c")
	if err := os.WriteFile(src, []byte(counterSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "counter")
	fixture.GCC(t, "-O2", "-o", bin, src)
	fp := fixture.Start(t, bin)
	fp.WaitFor(t, 0, "ready", 5*time.Second)
	p, err := proc.Open(fp.PID)
	if err != nil {
		t.Fatal(err)
	}
	maps, err := target.ReadMaps(fp.PID)
	if err != nil {
		t.Fatal(err)
	}
	images, err := target.Images(fp.PID, maps)
	if err != nil {
		t.Fatal(err)
	}
	a, err := arch.ForName(runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	if p.SyscallInsn, err = target.FindAlignedInsn(p, images, a.SyscallInsn, uint64(a.InsnAlign)); err != nil {
		t.Fatal(err)
	}
	if landing {
		if len(proc.LandingSyscallRet) == 0 {
			t.Skip("no landing on " + runtime.GOARCH)
		}
		ret, err1 := target.FindAlignedInsn(p, images, proc.LandingSyscallRet, 1)
		rt, err2 := target.FindAlignedInsn(p, images, proc.LandingRestoreRT, 1)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		p.Landing = &proc.Landing{SyscallRet: ret, RestoreRT: rt}
	}
	return fp, p
}

// threadState is the state letter of a thread in /proc.
func threadState(t *testing.T, pid, tid int) byte {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	return s[strings.LastIndexByte(s, ')')+2]
}

// TestSignalDuringRemoteSyscall: a signal that arrives while the thread is
// stopped is dequeued when the thread is resumed for an injected call. It
// must reach the program, not be swallowed by the tracer.
func TestSignalDuringRemoteSyscall(t *testing.T) {
	for _, landing := range []bool{false, true} {
		t.Run(fmt.Sprint("landing=", landing), func(t *testing.T) { testSignalDuringRemoteSyscall(t, landing) })
	}
}

func testSignalDuringRemoteSyscall(t *testing.T, landing bool) {
	fp, p := startCounter(t, landing)
	defer p.Close()
	th, err := p.StopThread(fp.PID)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Tgkill(fp.PID, fp.PID, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ret, err := p.Syscall(th, syscall.SYS_GETPID)
	if err != nil || int(ret) != fp.PID {
		t.Fatalf("remote getpid = %d, %v; want %d", ret, err, fp.PID)
	}
	if err := p.Resume(th); err != nil {
		t.Fatal(err)
	}
	fp.WaitFor(t, fp.Mark(), "usr1=1", 5*time.Second)
}

// TestRemoteSyscallInStoppedProcess: in a process stopped by SIGSTOP the
// thread parks in a group stop, not an interrupt stop. The call must
// finish, and the process must stay stopped afterwards.
func TestRemoteSyscallInStoppedProcess(t *testing.T) {
	fp, p := startCounter(t, false)
	defer p.Close()
	unix.Kill(fp.PID, unix.SIGSTOP)
	defer unix.Kill(fp.PID, unix.SIGCONT)
	for i := 0; threadState(t, fp.PID, fp.PID) != 'T'; i++ {
		if i > 500 {
			t.Fatal("process did not stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	th, err := p.StopThread(fp.PID)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ret, err := p.Syscall(th, syscall.SYS_GETPID)
		if err == nil && int(ret) != fp.PID {
			t.Errorf("remote getpid = %d, want %d", ret, fp.PID)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		unix.Kill(fp.PID, unix.SIGKILL)
		t.Fatal("remote system call in a stopped process did not return")
	}
	if err := p.Resume(th); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if s := threadState(t, fp.PID, fp.PID); s != 'T' {
		t.Fatalf("thread state %c after the call, want the process still stopped (T)", s)
	}
	mark := fp.Mark()
	unix.Kill(fp.PID, unix.SIGCONT)
	fp.WaitFor(t, mark, "usr1=0", 5*time.Second)
}

func TestCloseTwice(t *testing.T) {
	p, err := proc.Open(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
