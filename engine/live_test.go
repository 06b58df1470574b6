package engine_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/link"
	"github.com/hotpatch/hotpatch/patchfile"
	"github.com/hotpatch/hotpatch/target"
)

const waitLine = 5 * time.Second

// hostArch describes the architecture the tests run on.
var hostArch, _ = arch.ForName(runtime.GOARCH)

// build compiles a fixture program and returns its path.
func build(t *testing.T, fixtureName, src, out string, flags ...string) string {
	t.Helper()
	dir := fixture.Dir(t, fixtureName)
	bin := filepath.Join(t.TempDir(), out)
	args := append([]string{"-O2", "-g", "-pthread", "-o", bin, filepath.Join(dir, src)}, flags...)
	fixture.GCC(t, args...)
	return bin
}

// buildSource compiles a program a test holds as source text, with -O2
// -g -pthread and flags, and returns its path.
func buildSource(t *testing.T, name, src string, flags ...string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, name+".c")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	fixture.GCC(t, append([]string{"-O2", "-g", "-pthread", "-o", bin, path}, flags...)...)
	return bin
}

// object compiles a patch source to an object file.
func object(t *testing.T, fixtureName, src string, flags ...string) string {
	t.Helper()
	obj := filepath.Join(t.TempDir(), strings.TrimSuffix(src, ".c")+".o")
	args := append([]string{"-c", "-O2", "-o", obj, filepath.Join(fixture.Dir(t, fixtureName), src)}, flags...)
	if len(flags) == 0 {
		args = append(args, "-fPIC")
	}
	fixture.GCC(t, args...)
	return obj
}

func apply(t *testing.T, pid int, spec *patchfile.Spec, timeout time.Duration) *engine.Result {
	t.Helper()
	res, err := engine.Apply(context.Background(), pid, spec, engine.Options{Timeout: timeout})
	if err != nil {
		t.Fatalf("apply %s: %v", spec.Meta.ID, err)
	}
	t.Logf("applied %s: pause %v, %d attempt(s), %d thread(s), total %v", res.ID, res.Pause, res.Attempts, res.Threads, res.Total)
	return res
}

func revert(t *testing.T, pid int, id string) {
	t.Helper()
	if _, err := engine.Revert(context.Background(), pid, id, engine.Options{Timeout: 10 * time.Second}); err != nil {
		t.Fatalf("revert %s: %v", id, err)
	}
}

// anonNamesSupported probes PR_SET_VMA_ANON_NAME (CONFIG_ANON_VMA_NAME).
func anonNamesSupported() bool {
	b, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	defer unix.Munmap(b)
	name := []byte("probe\x00")
	return unix.Prctl(unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, uintptr(unsafe.Pointer(&b[0])), 4096, uintptr(unsafe.Pointer(&name[0]))) == nil
}

// snapshot captures what a refused apply must leave unchanged.
type snapshot struct {
	maps string
	code []byte
}

func take(t *testing.T, pid int, addr uint64, n int) snapshot {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	return snapshot{maps: string(maps), code: fixture.ReadMemory(t, pid, addr, n)}
}

func (s snapshot) assertSame(t *testing.T, after snapshot) {
	t.Helper()
	if strings.Contains(after.maps, "hotpatch") {
		t.Errorf("a patch mapping was left behind:\n%s", after.maps)
	}
	if !bytes.Equal(s.code, after.code) {
		t.Errorf("function bytes changed: % x -> % x", s.code, after.code)
	}
}

func TestApplyRevertPIE(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic", "-fPIE", "-pie")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "pie-fix", "compute=compute_v2")
	res := apply(t, p.PID, spec, 5*time.Second)
	if len(res.Functions) != 1 || res.Functions[0].JumpLen != hostArch.ShortJumpLen || !res.Functions[0].Gated {
		t.Errorf("want one gated %d-byte jump, got %+v", hostArch.ShortJumpLen, res.Functions)
	}
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)

	st, err := engine.Status(p.PID)
	if err != nil || len(st) != 1 || st[0].ID != "pie-fix" || st[0].State != "active" {
		t.Fatalf("status = %+v, %v", st, err)
	}
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.PID))
	if named := bytes.Contains(maps, []byte("[anon:hotpatch:pie-fix]")); named != anonNamesSupported() {
		t.Errorf("mapping named %v, kernel supports names %v:\n%s", named, anonNamesSupported(), maps)
	}
	// Applying the same patch twice is a no-op.
	again, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{})
	if err != nil || !again.AlreadyApplied {
		t.Fatalf("second apply: %+v, %v", again, err)
	}
	revert(t, p.PID, "pie-fix")
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
	if st, _ := engine.Status(p.PID); len(st) != 0 {
		t.Errorf("status after revert = %+v", st)
	}
	if maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.PID)); bytes.Contains(maps, []byte("hotpatch")) {
		t.Errorf("patch mapping left after revert")
	}
}

func TestApplyNonPIE(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic-nopie", "-fno-pie", "-no-pie")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	// Non-PIC code with static data access through 32-bit fields.
	spec := fixture.Pack(t, bin, object(t, "basic", "static_use.c", "-fno-pic"), "nopie-fix", "compute=compute_static")
	res := apply(t, p.PID, spec, 5*time.Second)
	if res.Base+res.Size > 1<<32 {
		t.Errorf("non-PIC patch mapped at %#x, above 4 GiB", res.Base)
	}
	// helper(21) = 21+5, plus scale*100.
	p.WaitFor(t, p.Mark(), "compute=526", waitLine)
	revert(t, p.PID, "nopie-fix")
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
	// Library data the executable holds a copy of (stdout@GLIBC_...) binds
	// to that copy, within 32-bit reach.
	out := fixture.Pack(t, bin, object(t, "basic", "stdout_use.c", "-fno-pic"), "nopie-stdout", "compute=compute_stdout")
	apply(t, p.PID, out, 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
}

func TestSharedLibrary(t *testing.T) {
	fixture.Require(t)
	dir := t.TempDir()
	src := fixture.Dir(t, "sharedlib")
	lib := filepath.Join(dir, "libcalc.so")
	fixture.GCC(t, "-O2", "-g", "-shared", "-fPIC", "-o", lib, filepath.Join(src, "calc.c"))
	bin := filepath.Join(dir, "main")
	fixture.GCC(t, "-O2", "-o", bin, filepath.Join(src, "main.c"), "-L"+dir, "-lcalc", "-Wl,-rpath,$ORIGIN")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "lib=1001", waitLine)
	spec := fixture.Pack(t, lib, object(t, "sharedlib", "lib_v2.c"), "lib-fix", "lib_compute=lib_compute_v2")
	apply(t, p.PID, spec, 5*time.Second)
	p.WaitFor(t, p.Mark(), "lib=2001", waitLine)
	revert(t, p.PID, "lib-fix")
	p.WaitFor(t, p.Mark(), "lib=1001", waitLine)
}

func TestManyThreadsHammering(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	p := fixture.Start(t, bin, "8", "63")
	p.WaitFor(t, 0, "threads=8", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "hammer-fix", "compute=compute_v2")
	res := apply(t, p.PID, spec, 20*time.Second)
	if res.Threads < 9 {
		t.Errorf("stopped %d threads, want at least 9", res.Threads)
	}
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
	time.Sleep(200 * time.Millisecond)
	line := p.WaitFor(t, p.Mark(), "compute=63", waitLine)
	if !strings.Contains(line, "bad=0") || strings.Contains(line, " new=0 ") {
		t.Errorf("hammering threads saw wrong values or no new ones: %s", line)
	}
	revert(t, p.PID, "hammer-fix")
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
}

func TestStaticFunctionAndData(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "static_use.c"), "static-fix", "compute=compute_static")
	apply(t, p.PID, spec, 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=526", waitLine)
}

func TestImportNewLibcFunction(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	syms, err := target.LoadSymbols(bin, bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := syms.LookupDynamic("getppid"); ok {
		t.Fatal("fixture must not import getppid")
	}
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "import.c"), "import-fix", "compute=compute_import")
	res := apply(t, p.PID, spec, 5*time.Second)
	found := false
	for _, im := range res.Imports {
		found = found || (im.Name == "getppid" && strings.Contains(im.Origin, "libc"))
	}
	if !found {
		t.Errorf("getppid not imported from libc: %+v", res.Imports)
	}
	p.WaitFor(t, p.Mark(), "compute=84", waitLine)
}

func TestThreadLocal(t *testing.T) {
	fixture.Require(t)
	for _, pic := range []string{"-fPIC", "-fno-pic"} {
		t.Run(pic, func(t *testing.T) {
			bin := build(t, "basic", "target.c", "basic")
			p := fixture.Start(t, bin)
			p.WaitFor(t, 0, "compute=42", waitLine)
			spec := fixture.Pack(t, bin, object(t, "basic", "tls.c", pic), "tls-fix", "compute=compute_tls")
			apply(t, p.PID, spec, 5*time.Second)
			p.WaitFor(t, p.Mark(), "compute=7021", waitLine)
			// A patch that defines them (global and static) shares the target's.
			def := fixture.Pack(t, bin, object(t, "basic", "tls_def.c", pic, fixture.NoSectionAnchors), "tls-def", "compute=compute_tlsdef")
			apply(t, p.PID, def, 5*time.Second)
			p.WaitFor(t, p.Mark(), "compute=7321", waitLine)
		})
	}
}

func TestTinyFunction(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	syms, _ := target.LoadSymbols(bin, bin)
	// On x86-64 tiny is shorter than the 5-byte jump; no arm64 function is
	// shorter than its 4-byte jump, but tiny is all moved to the stub.
	if sym, err := syms.Lookup("tiny", ""); err != nil || runtime.GOARCH == "amd64" && sym.Size >= 5 {
		t.Fatalf("fixture's tiny must be under 5 bytes: %+v %v", sym, err)
	}
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "tiny=2", waitLine)
	spec := fixture.Pack(t, bin, object(t, "basic", "tiny_v2.c"), "tiny-fix", "tiny=tiny_v2")
	apply(t, p.PID, spec, 5*time.Second)
	p.WaitFor(t, p.Mark(), "tiny=101", waitLine)
	revert(t, p.PID, "tiny-fix")
	p.WaitFor(t, p.Mark(), "tiny=2", waitLine)
}

func TestSleepingThreadDelaysApply(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "sleeper", "target.c", "sleeper")
	p := fixture.Start(t, bin, "stdin")
	p.WaitFor(t, 0, "entering", waitLine) // now waiting inside slow()
	spec := fixture.Pack(t, bin, object(t, "sleeper", "slow_v2.c"), "slow-fix", "slow=slow_v2")
	type outcome struct {
		res *engine.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 30 * time.Second})
		done <- outcome{res, err}
	}()
	// Hold the thread inside long enough for the apply to reach its check:
	// an apply takes milliseconds natively, up to a second under emulation.
	hold := time.Second
	if runtime.GOARCH != "amd64" {
		hold = 5 * time.Second
	}
	select {
	case o := <-done:
		t.Fatalf("apply returned while a thread was inside slow(): %+v, %v", o.res, o.err)
	case <-time.After(hold):
	}
	p.Stdin.Write([]byte("go\n")) // let the thread leave slow()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.res.Attempts < 2 {
		t.Errorf("apply succeeded on attempt %d while a thread waited inside slow()", o.res.Attempts)
	}
	t.Logf("applied after %d attempts", o.res.Attempts)
	p.WaitFor(t, p.Mark(), "slow=63", waitLine)
}

func TestBusyTimeoutLeavesTargetUntouched(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "sleeper", "target.c", "sleeper")
	p := fixture.Start(t, bin, "100000000")
	p.WaitFor(t, 0, "entering", waitLine)
	time.Sleep(50 * time.Millisecond)
	addr := fixture.FuncAddr(t, p.PID, bin, "slow")
	before := take(t, p.PID, addr, 16)
	spec := fixture.Pack(t, bin, object(t, "sleeper", "slow_v2.c"), "slow-fix", "slow=slow_v2")
	_, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 300 * time.Millisecond})
	if !errors.Is(err, engine.ErrBusy) {
		t.Fatalf("want ErrBusy, got %v", err)
	}
	if !strings.Contains(err.Error(), "slow") || !strings.Contains(err.Error(), fmt.Sprint(p.PID)) {
		t.Errorf("error should name the thread and the function: %v", err)
	}
	before.assertSame(t, take(t, p.PID, addr, 16))
	if !p.Alive() {
		t.Errorf("target not running after a refused apply")
	}
}

func TestBlockedSyscallsComplete(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "blocking", "target.c", "blocking")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "reader blocking", waitLine)
	p.WaitFor(t, 0, "compute=42", waitLine)
	time.Sleep(50 * time.Millisecond)
	spec := fixture.Pack(t, bin, object(t, "blocking", "compute_v2.c"), "block-fix", "compute=compute_v2")
	for i := 0; i < 3; i++ { // several stops while the calls block
		apply(t, p.PID, spec, 5*time.Second)
		revert(t, p.PID, "block-fix")
	}
	apply(t, p.PID, spec, 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
	if _, err := p.Stdin.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	p.WaitFor(t, 0, "read 6 bytes: hello", waitLine)
	p.WaitFor(t, 0, "sem_wait woke", waitLine)
	time.Sleep(300 * time.Millisecond)
	for _, l := range p.Lines() {
		if strings.Contains(l, "interrupted") || strings.Contains(l, "failed") {
			t.Errorf("a blocked call saw the patch: %s", l)
		}
	}
}

func TestRecursionOnStack(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "recursion", "target.c", "recursion")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "depth=40", waitLine)
	spec := fixture.Pack(t, bin, object(t, "recursion", "depth_v2.c"), "depth-fix", "depth=depth_v2")
	apply(t, p.PID, spec, 10*time.Second)
	p.WaitFor(t, p.Mark(), "depth=1040", waitLine)
	for _, l := range p.Lines() {
		if strings.HasPrefix(l, "depth=") && l != "depth=40" && l != "depth=1040" {
			t.Errorf("mixed old and new frames produced %s", l)
		}
	}
}

func TestForkKeepsPatch(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "forker", "target.c", "forker")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "parent compute=42", waitLine)
	spec := fixture.Pack(t, bin, object(t, "forker", "compute_v2.c"), "fork-fix", "compute=compute_v2")
	apply(t, p.PID, spec, 5*time.Second)
	mark := p.Mark()
	p.Stdin.Write([]byte("fork\n"))
	p.WaitFor(t, mark, "child compute=63", waitLine)
	p.WaitFor(t, mark, "parent compute=63", waitLine)
}

func TestStackingLIFO(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	first := fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "first", "compute=compute_v2")
	second := fixture.Pack(t, bin, object(t, "basic", "compute_v3.c"), "second", "compute=compute_v3")
	apply(t, p.PID, first, 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
	apply(t, p.PID, second, 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=105", waitLine)

	st, err := engine.Status(p.PID)
	if err != nil || len(st) != 2 || st[0].ID != "first" || st[1].ID != "second" || st[0].State != "active" {
		t.Fatalf("status = %+v, %v", st, err)
	}
	if _, err := engine.Revert(context.Background(), p.PID, "first", engine.Options{}); !errors.Is(err, engine.ErrStacked) {
		t.Fatalf("reverting the older patch first: want ErrStacked, got %v", err)
	}
	revert(t, p.PID, "second")
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
	revert(t, p.PID, "first")
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
}

func TestRevertAll(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	apply(t, p.PID, fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "a", "compute=compute_v2"), 5*time.Second)
	apply(t, p.PID, fixture.Pack(t, bin, object(t, "basic", "tiny_v2.c"), "b", "tiny=tiny_v2"), 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=63 tiny=101", waitLine)
	res, err := engine.RevertAll(context.Background(), p.PID, engine.Options{})
	if err != nil || len(res) != 2 || res[0].ID != "b" {
		t.Fatalf("revert all = %+v, %v", res, err)
	}
	p.WaitFor(t, p.Mark(), "compute=42 tiny=2", waitLine)
}

func TestRefusals(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	other := build(t, "basic", "target.c", "other", "-DOTHER_BUILD=1", "-O1")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	addr := fixture.FuncAddr(t, p.PID, bin, "compute")

	cases := []struct {
		name string
		spec func() (*patchfile.Spec, error)
		want error
		text string
	}{
		{"other build", func() (*patchfile.Spec, error) {
			return fixture.Pack(t, other, object(t, "basic", "compute_v2.c"), "x", "compute=compute_v2"), nil
		}, engine.ErrBuildIDMismatch, "build-id"},
		{"changed code", func() (*patchfile.Spec, error) {
			meta, err := target.PatchMetadata(bin, "x", []string{"compute=compute_v2"})
			if err != nil {
				return nil, err
			}
			meta.Functions[0].OldHash = "sha256:" + strings.Repeat("0", 64)
			obj, _ := os.ReadFile(object(t, "basic", "compute_v2.c"))
			raw, err := patchfile.Pack(obj, meta)
			if err != nil {
				return nil, err
			}
			return patchfile.Load(raw)
		}, engine.ErrHashMismatch, "compute"},
		{"unresolved symbol", func() (*patchfile.Spec, error) {
			return fixture.Pack(t, bin, object(t, "basic", "unresolved.c"), "x", "compute=compute_bad"), nil
		}, link.ErrUnresolved, "no_such_function"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec, err := c.spec()
			if err != nil {
				t.Fatal(err)
			}
			before := take(t, p.PID, addr, 16)
			_, err = engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: time.Second})
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("want %v mentioning %q, got %v", c.want, c.text, err)
			}
			before.assertSame(t, take(t, p.PID, addr, 16))
			p.WaitFor(t, p.Mark(), "compute=42", waitLine)
		})
	}

	t.Run("no room", func(t *testing.T) {
		nb := build(t, "basic", "noroom_target.c", "noroom")
		np := fixture.Start(t, nb)
		np.WaitFor(t, 0, "tight=2", waitLine)
		a := fixture.FuncAddr(t, np.PID, nb, "tight")
		before := take(t, np.PID, a, 8)
		spec := fixture.Pack(t, nb, object(t, "basic", "noroom.c"), "x", "tight=tight_v2")
		_, err := engine.Apply(context.Background(), np.PID, spec, engine.Options{Timeout: time.Second})
		if !errors.Is(err, engine.ErrNoRoom) || !strings.Contains(err.Error(), "tight") {
			t.Fatalf("want ErrNoRoom naming tight, got %v", err)
		}
		before.assertSame(t, take(t, np.PID, a, 8))
		np.WaitFor(t, np.Mark(), "tight=2", waitLine)
	})
}

func TestThreadsCreatedDuringStop(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "churn", "target.c", "churn")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	spec := fixture.Pack(t, bin, object(t, "churn", "compute_v2.c"), "churn-fix", "compute=compute_v2")
	for i := 0; i < 5; i++ {
		apply(t, p.PID, spec, 10*time.Second)
		p.WaitFor(t, p.Mark(), "compute=63", waitLine)
		revert(t, p.PID, "churn-fix")
		p.WaitFor(t, p.Mark(), "compute=42", waitLine)
	}
	if !p.Alive() {
		t.Fatal("target stopped or died")
	}
}

func TestUngatedFunction(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "loophead", "target.c", "loophead")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "sum=6", waitLine)
	spec := fixture.Pack(t, bin, object(t, "loophead", "sum_v2.c"), "sum-fix", "sum_to=sum_v2")
	res := apply(t, p.PID, spec, 5*time.Second)
	if len(res.Functions) != 1 || res.Functions[0].Gated || res.Functions[0].Ungated == "" {
		t.Fatalf("a function branching into its first bytes must switch directly, with a reason: %+v", res.Functions)
	}
	p.WaitFor(t, p.Mark(), "sum=300", waitLine)
	revert(t, p.PID, "sum-fix")
	p.WaitFor(t, p.Mark(), "sum=6", waitLine)
	// Entry consistency would leave threads looping inside the old body,
	// which jumps back into the overwritten bytes: refused, target untouched.
	addr := fixture.FuncAddr(t, p.PID, bin, "sum_to")
	before := take(t, p.PID, addr, 8)
	if _, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Consistency: engine.ConsistencyEntry}); !errors.Is(err, engine.ErrEntryUnsafe) {
		t.Fatalf("entry mode on an ungated function: want ErrEntryUnsafe, got %v", err)
	}
	before.assertSame(t, take(t, p.PID, addr, 8))
}

func TestIFuncInTarget(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "ifunc", "target.c", "ifunc")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42 add=1001", waitLine)
	// Calling the target's IFUNC reaches the implementation it selected.
	spec := fixture.Pack(t, bin, object(t, "ifunc", "use.c"), "ifunc-call", "compute=compute_v2")
	apply(t, p.PID, spec, 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=1021", waitLine)
	// Replacing the IFUNC symbol itself would patch a resolver that already ran.
	bad := fixture.Pack(t, bin, object(t, "ifunc", "use.c"), "ifunc-replace", "add1000=compute_v2")
	if _, err := engine.Apply(context.Background(), p.PID, bad, engine.Options{}); !errors.Is(err, engine.ErrNotFunction) {
		t.Fatalf("replacing an IFUNC: want ErrNotFunction, got %v", err)
	}
}

func TestPreciseUnwindThroughVDSO(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "vdso", "target.c", "vdso")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	spec := fixture.Pack(t, bin, object(t, "vdso", "compute_v2.c"), "vdso-fix", "compute=compute_v2")
	res := apply(t, p.PID, spec, 5*time.Second)
	// The arm64 vDSO has no CFI for clock_gettime: there the scan covers it.
	if (res.Fallbacks != 0 || res.Frames < res.Threads) && runtime.GOARCH == "amd64" {
		t.Errorf("%d of %d threads fell back to a stack scan (%d precise frames)", res.Fallbacks, res.Threads, res.Frames)
	}
	t.Logf("%d of %d threads fell back to a stack scan (%d precise frames)", res.Fallbacks, res.Threads, res.Frames)
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
}

// readCode reads n bytes of the process's memory at addr.
func readCode(t *testing.T, pid int, addr uint64, n int) []byte {
	t.Helper()
	return take(t, pid, addr, n).code
}

// btiGuarded reports whether the page holding addr is BTI-guarded (the
// "bt" flag in smaps), and whether the CPU could guard it at all.
func btiGuarded(t *testing.T, pid int, addr uint64) (guarded, cpu bool) {
	t.Helper()
	info, _ := os.ReadFile("/proc/cpuinfo")
	cpu = bytes.Contains(info, []byte(" bti"))
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, line := range strings.Split(string(smaps), "\n") {
		var lo, hi uint64
		if n, _ := fmt.Sscanf(line, "%x-%x", &lo, &hi); n == 2 && strings.Contains(line, " ") {
			in = addr >= lo && addr < hi
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.Contains(line+" ", " bt "), cpu
		}
	}
	return false, cpu
}

// Functions built with control-flow protection are called through
// function pointers, so the landing pad at each entry must stay: endbr64
// on x86-64 (CET indirect branch tracking), paciasp or bti c on arm64,
// where the binary enforces BTI. The jump goes after it; on arm64 a
// function whose entry signed LR is left with LR authenticated again, so
// the new function signs it exactly once.
func TestBranchProtection(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "branchprot", "target.c", "branchprot", fixture.BranchProtection)
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=41 leaf=2 direct=41", waitLine)
	entries := map[string]uint64{"compute": fixture.FuncAddr(t, p.PID, bin, "compute"), "leaf": fixture.FuncAddr(t, p.PID, bin, "leaf")}
	before := map[string][]byte{}
	for name, addr := range entries {
		before[name] = readCode(t, p.PID, addr, 8)
	}
	if runtime.GOARCH == "arm64" {
		if guarded, cpu := btiGuarded(t, p.PID, entries["compute"]); guarded != cpu {
			t.Errorf("BTI guard on the target's code is %v, CPU supports BTI: %v", guarded, cpu)
		} else {
			t.Logf("target code BTI-guarded: %v", guarded)
		}
		if w := binary.LittleEndian.Uint32(before["compute"]); w != 0xd503233f {
			t.Fatalf("compute starts with %08x, want paciasp", w)
		}
		if w := binary.LittleEndian.Uint32(before["leaf"]); w != 0xd503245f {
			t.Fatalf("leaf starts with %08x, want bti c", w)
		}
	}
	obj := object(t, "branchprot", "v2.c", "-fPIC", fixture.BranchProtection)
	spec := fixture.Pack(t, bin, obj, "bp-fix", "compute=compute_v2", "leaf=leaf_v2")
	res := apply(t, p.PID, spec, 5*time.Second)
	for _, f := range res.Functions {
		if !f.Gated {
			t.Errorf("%s not gated: %s", f.Name, f.Ungated)
		}
	}
	p.WaitFor(t, p.Mark(), "compute=61 leaf=101 direct=61", waitLine)
	for name, addr := range entries {
		after := readCode(t, p.PID, addr, 8)
		if runtime.GOARCH == "amd64" && !bytes.HasPrefix(before[name], []byte{0xf3, 0x0f, 0x1e, 0xfa}) {
			t.Fatalf("%s starts with % x, want endbr64", name, before[name][:4])
		}
		if !bytes.Equal(after[:4], before[name][:4]) || bytes.Equal(after[4:], before[name][4:]) {
			t.Errorf("%s: % x became % x; want the landing pad kept and the next instruction replaced", name, before[name], after)
		}
	}
	st, err := engine.Status(p.PID)
	if err != nil || len(st) != 1 || st[0].State != "active" {
		t.Fatalf("status = %+v, %v", st, err)
	}
	revert(t, p.PID, "bp-fix")
	p.WaitFor(t, p.Mark(), "compute=41 leaf=2 direct=41", waitLine)
	for name, addr := range entries {
		if after := readCode(t, p.PID, addr, 8); !bytes.Equal(after, before[name]) {
			t.Errorf("%s after revert: % x, want % x", name, after, before[name])
		}
	}
}

// A thread sleeps in a function called by slow; on arm64 the return
// address into slow is saved signed (PAC) in that function's frame. The
// check must still see the thread inside slow.
func TestBusyWithSignedReturnAddress(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "branchprot", "target.c", "branchprot", fixture.BranchProtection)
	p := fixture.Start(t, bin, "100000000")
	p.WaitFor(t, 0, "entering", waitLine)
	time.Sleep(100 * time.Millisecond)
	obj := object(t, "branchprot", "v2.c", "-fPIC", fixture.BranchProtection)
	spec := fixture.Pack(t, bin, obj, "slow-fix", "slow=slow_v2")
	_, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 300 * time.Millisecond})
	if !errors.Is(err, engine.ErrBusy) || !strings.Contains(err.Error(), "slow") {
		t.Fatalf("want ErrBusy naming slow, got %v", err)
	}
	t.Logf("refused: %v", err)
	if !p.Alive() {
		t.Error("target not running after a refused apply")
	}
}

// TestCXXExceptionThroughPatch: the patch throws, and the exception must
// unwind through the patch's own frame to the target's catch. That needs
// the patch's unwind tables registered with the target's unwinder.
func TestCXXExceptionThroughPatch(t *testing.T) {
	fixture.Require(t)
	bin, obj := buildCXX(t)
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "caught: bad input", waitLine)
	spec := fixture.Pack(t, bin, obj, "cxx-fix", "_Z5parsei=_Z8parse_v2i")
	res := apply(t, p.PID, spec, 5*time.Second)
	if !res.UnwindRegistered {
		t.Fatal("unwind tables not registered in a C++ target")
	}
	if st, err := engine.Status(p.PID); err != nil || len(st) != 1 || !st[0].UnwindRegistered {
		t.Errorf("status does not show the registration: %+v, %v", st, err)
	}
	mark := p.Mark()
	p.WaitFor(t, mark, "parsed=63", waitLine)
	p.WaitFor(t, mark, "caught: patched: bad input", waitLine)
	// Revert deregisters before unmapping: later exceptions still work.
	revert(t, p.PID, "cxx-fix")
	mark = p.Mark()
	p.WaitFor(t, mark, "parsed=42", waitLine)
	p.WaitFor(t, mark, "caught: bad input", waitLine)
	// And again, to show a second registration after a deregistration.
	apply(t, p.PID, spec, 5*time.Second)
	p.WaitFor(t, p.Mark(), "caught: patched: bad input", waitLine)
}

// buildCXX compiles the C++ fixture and its patch with g++.
func buildCXX(t *testing.T) (bin, obj string) {
	t.Helper()
	dir, src := t.TempDir(), fixture.Dir(t, "cxx")
	bin, obj = filepath.Join(dir, "cxx"), filepath.Join(dir, "parse_v2.o")
	fixture.GXX(t, "-O2", "-g", "-o", bin, filepath.Join(src, "target.cc"))
	fixture.GXX(t, "-c", "-O2", "-fPIC", "-o", obj, filepath.Join(src, "parse_v2.cc"))
	return bin, obj
}

func TestEntryConsistencyForLoopsThatNeverReturn(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "forever", "target.c", "forever")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "serve 1 v1", waitLine)
	spec := fixture.Pack(t, bin, object(t, "forever", "serve_v2.c"), "serve-fix", "serve=serve_v2")
	// Strict mode can never find serve() idle.
	_, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 300 * time.Millisecond})
	if !errors.Is(err, engine.ErrBusy) {
		t.Fatalf("strict apply on a function that never returns: want ErrBusy, got %v", err)
	}
	res, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 5 * time.Second, Consistency: engine.ConsistencyEntry})
	if err != nil {
		t.Fatalf("entry apply: %v", err)
	}
	t.Logf("entry apply: pause %v, %d attempt(s)", res.Pause, res.Attempts)
	// The running loop stays old; a thread started now runs the new code.
	mark := p.Mark()
	p.Stdin.Write([]byte("spawn\n"))
	p.WaitFor(t, mark, "serve 2 v2", waitLine)
	p.WaitFor(t, p.Mark(), "serve 1 v1", waitLine)
	// Revert is strict: thread 2 stays inside the new code, so it must refuse.
	if _, err := engine.Revert(context.Background(), p.PID, "serve-fix", engine.Options{Timeout: 300 * time.Millisecond}); !errors.Is(err, engine.ErrBusy) {
		t.Fatalf("revert with a thread inside the new code: want ErrBusy, got %v", err)
	}
	if _, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Consistency: "sometimes"}); err == nil {
		t.Error("an unknown consistency mode was accepted")
	}
}
