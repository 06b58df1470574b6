//go:build linux && amd64

package consistency

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fixtureSrc: main -> outer -> middle -> inner, where inner spins or
// blocks in pause(); a "threads" mode runs one such chain next to idle
// threads. noipa keeps the functions separate and un-cloned, and the work
// after each call prevents tail calls.
const fixtureSrc = `
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define NOIPA __attribute__((noipa))

volatile unsigned long sink;
volatile int keep_going = 1;

static void announce(const char *what) {
	printf("%s %ld\n", what, (long)syscall(SYS_gettid));
	fflush(stdout);
}

NOIPA void on_signal(int sig) {
	announce("handler");
	while (keep_going)
		sink += sig;
}

NOIPA int inner(int spin) {
	if (spin == 2)
		signal(SIGUSR1, on_signal);
	if (spin == 3) {
		stack_t ss = {.ss_size = 1 << 16};
		ss.ss_sp = mmap(NULL, ss.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		sigaltstack(&ss, NULL);
		struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_ONSTACK};
		sigaction(SIGUSR1, &sa, NULL);
	}
	announce("inner");
	if (spin != 1)
		for (;;)
			pause();
	while (keep_going)
		sink++;
	return (int)sink;
}

NOIPA int middle(int spin) { int r = inner(spin); return r * 3 + (int)sink; }
NOIPA int outer(int spin) { int r = middle(spin); return r + 7 * (int)sink; }
NOIPA int unrelated(int x) { return x * 5 + (int)sink; }

NOIPA int idle(void) {
	announce("idle");
	for (;;)
		pause();
	return 0;
}

static void *worker(void *arg) {
	if (arg)
		outer(1);
	idle();
	return NULL;
}

int main(int argc, char **argv) {
	const char *mode = argc > 1 ? argv[1] : "spin";
	if (!strcmp(mode, "threads")) {
		int n = argc > 2 ? atoi(argv[2]) : 4;
		pthread_t th[256];
		for (int i = 0; i < n && i < 256; i++)
			pthread_create(&th[i], NULL, worker, (void *)(long)(i == n / 2));
		announce("main");
		pthread_join(th[0], NULL);
		return unrelated(0);
	}
	int m = !strcmp(mode, "spin") ? 1 : !strcmp(mode, "signal") ? 2 : !strcmp(mode, "altstack") ? 3 : 0;
	return outer(m) + unrelated(1);
}
`

type fixture struct {
	path string
	syms map[string]elf.Symbol
}

func needLive(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("live tests need linux/amd64")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found; live tests compile C fixtures")
	}
}

func buildFixture(t testing.TB, flags ...string) *fixture {
	t.Helper()
	needLive(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "fixture.c")
	if err := os.WriteFile(src, []byte(fixtureSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "fixture")
	args := append(append([]string{}, flags...), "-pthread", "-o", bin, src)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %v: %v\n%s", args, err, out)
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	syms, err := ef.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{path: bin, syms: map[string]elf.Symbol{}}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Size > 0 {
			f.syms[s.Name] = s
		}
	}
	for _, n := range []string{"inner", "middle", "outer", "unrelated", "idle", "on_signal"} {
		if _, ok := f.syms[n]; !ok {
			t.Fatalf("fixture has no symbol %s", n)
		}
	}
	return f
}

// tracee is a running fixture with announced thread ids.
type tracee struct {
	cmd     *exec.Cmd
	out     *bufio.Scanner
	pid     int
	lines   map[string][]int // announcement -> tids
	threads []Thread
	mods    *Modules
	mem     *os.File
	bias    uint64 // of the fixture executable
	seized  []int
}

// startTracee runs the fixture and waits for want announcements.
func startTracee(t testing.TB, f *fixture, want int, args ...string) *tracee {
	t.Helper()
	cmd := exec.Command(f.path, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tr := &tracee{cmd: cmd, out: bufio.NewScanner(out), pid: cmd.Process.Pid, lines: map[string][]int{}}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	tr.await(t, want)
	return tr
}

// await reads n announcements.
func (tr *tracee) await(t testing.TB, n int) {
	t.Helper()
	sc := tr.out
	for i := 0; i < n; i++ {
		if !sc.Scan() {
			t.Fatalf("fixture exited before announcing (%v)", sc.Err())
		}
		fs := strings.Fields(sc.Text())
		if len(fs) != 2 {
			t.Fatalf("bad announcement %q", sc.Text())
		}
		tid, _ := strconv.Atoi(fs[1])
		tr.lines[fs[0]] = append(tr.lines[fs[0]], tid)
	}
}

// stop seizes and interrupts every thread and collects what Check needs.
// The caller must hold runtime.LockOSThread until detach.
func (tr *tracee) stop(t testing.TB, f *fixture) {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", tr.pid))
	if err != nil {
		t.Fatal(err)
	}
	var tids []int
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if err := unix.PtraceSeize(tid); err != nil {
			t.Fatalf("seize %d: %v", tid, err)
		}
		tr.seized = append(tr.seized, tid)
		if err := unix.PtraceInterrupt(tid); err != nil {
			t.Fatalf("interrupt %d: %v", tid, err)
		}
		tids = append(tids, tid)
	}
	maps := readMaps(t, tr.pid)
	tr.threads = nil
	for _, tid := range tids {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				t.Fatalf("wait %d: %v", tid, err)
			}
			break
		}
		if !ws.Stopped() {
			t.Fatalf("thread %d: unexpected wait status %#x", tid, ws)
		}
		var r unix.PtraceRegs
		if err := unix.PtraceGetRegs(tid, &r); err != nil {
			t.Fatalf("getregs %d: %v", tid, err)
		}
		th := Thread{
			TID: tid,
			Regs: []uint64{r.Rax, r.Rdx, r.Rcx, r.Rbx, r.Rsi, r.Rdi, r.Rbp, r.Rsp,
				r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15},
			PC: r.Rip,
			SP: r.Rsp,
		}
		for _, m := range maps {
			if m.start <= th.SP && th.SP < m.end {
				th.StackLo, th.StackHi = m.start, m.end
			}
		}
		tr.threads = append(tr.threads, th)
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", tr.pid))
	if err != nil {
		t.Fatal(err)
	}
	tr.mem = mem
	tr.mods = loadModules(t, tr.pid, maps, mem, f, &tr.bias)
}

func (tr *tracee) detach(t testing.TB) {
	for _, tid := range tr.seized {
		if err := unix.PtraceDetach(tid); err != nil {
			t.Errorf("detach %d: %v", tid, err)
		}
	}
	tr.seized = nil
	if tr.mem != nil {
		tr.mem.Close()
	}
}

func (tr *tracee) memory() Memory { return fileMem{tr.mem} }

// rangeOf returns the runtime range of a fixture function.
func (tr *tracee) rangeOf(f *fixture, name string) Range {
	s := f.syms[name]
	return Range{Lo: s.Value + tr.bias, Hi: s.Value + s.Size + tr.bias, Name: name}
}

type fileMem struct{ f *os.File }

func (m fileMem) ReadAt(p []byte, addr uint64) (int, error) { return m.f.ReadAt(p, int64(addr)) }

type mapping struct {
	start, end, off uint64
	perms, path     string
}

func readMaps(t testing.TB, pid int) []mapping {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var ms []mapping
	for _, line := range strings.Split(string(data), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 5 {
			continue
		}
		var m mapping
		lo, hi, _ := strings.Cut(fs[0], "-")
		m.start, _ = strconv.ParseUint(lo, 16, 64)
		m.end, _ = strconv.ParseUint(hi, 16, 64)
		m.off, _ = strconv.ParseUint(fs[2], 16, 64)
		m.perms = fs[1]
		if len(fs) >= 6 {
			m.path = fs[5]
		}
		ms = append(ms, m)
	}
	return ms
}

// loadModules loads every executable file mapping plus the vDSO.
func loadModules(t testing.TB, pid int, maps []mapping, mem *os.File, f *fixture, bias *uint64) *Modules {
	t.Helper()
	var mods []*Module
	for _, m := range maps {
		if !strings.Contains(m.perms, "x") {
			continue
		}
		switch {
		case m.path == "[vdso]":
			img := make([]byte, m.end-m.start)
			if _, err := mem.ReadAt(img, int64(m.start)); err != nil {
				t.Fatalf("read vdso: %v", err)
			}
			b, err := MappingBias(bytes.NewReader(img), m.start, 0)
			if err != nil {
				t.Fatal(err)
			}
			mod, err := NewModule(bytes.NewReader(img), "[vdso]", b)
			if err != nil {
				t.Fatal(err)
			}
			mods = append(mods, mod)
		case strings.HasPrefix(m.path, "/"):
			mod, err := LoadModuleMapping(m.path, m.start, m.off)
			if err != nil {
				t.Fatalf("load %s: %v", m.path, err)
			}
			if m.path == f.path {
				*bias = mod.Bias()
			}
			mods = append(mods, mod)
		}
	}
	return NewModules(mods...)
}
