package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patchfile"
	"github.com/hotpatch/hotpatch/proc"
)

// TestMain lets the test binary act as a separate engine process that a
// fault point can kill.
func TestMain(m *testing.M) {
	if op := os.Getenv("HOTPATCH_TEST_ENGINE"); op != "" {
		os.Exit(runEngine(op))
	}
	os.Exit(m.Run())
}

func runEngine(op string) int {
	pid, _ := strconv.Atoi(os.Getenv("HOTPATCH_TEST_PID"))
	var err error
	switch op {
	case "apply":
		var spec *patchfile.Spec
		if spec, err = patchfile.LoadFile(os.Getenv("HOTPATCH_TEST_FILE")); err == nil {
			_, err = engine.Apply(context.Background(), pid, spec, engine.Options{Timeout: 5 * time.Second,
				Consistency: engine.Consistency(os.Getenv("HOTPATCH_TEST_CONSISTENCY"))})
		}
	case "revert":
		_, err = engine.Revert(context.Background(), pid, os.Getenv("HOTPATCH_TEST_ID"), engine.Options{Timeout: 5 * time.Second})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// killedEngine runs op in a child engine that dies at fault.
func killedEngine(t *testing.T, op, fault string, pid int, file, id string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HOTPATCH_TEST_ENGINE="+op, "HOTPATCH_FAULT="+fault,
		"HOTPATCH_TEST_PID="+strconv.Itoa(pid), "HOTPATCH_TEST_FILE="+file, "HOTPATCH_TEST_ID="+id)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("engine should have died at %s, got %v\n%s", fault, err, out)
	}
}

// settled waits for two fresh lines and returns the last: the output the
// process produces after the engine died.
func settled(t *testing.T, p *fixture.Proc) string {
	t.Helper()
	m := p.Mark()
	p.WaitFor(t, m, "compute=", waitLine)
	return p.WaitFor(t, m+1, "compute=", waitLine)
}

func TestEngineKilledDuringApply(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	raw := fixture.PackBytes(t, bin, object(t, "basic", "two.c"), "two", "compute=compute_v2", "tiny=tiny_v2")
	file := filepath.Join(t.TempDir(), "two.hp")
	os.WriteFile(file, raw, 0o644)
	spec, err := patchfile.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	const old, patched = "compute=42 tiny=2 ", "compute=63 tiny=101 "
	for _, c := range []struct {
		fault string
		want  string // what the process runs right after the engine died
		state string // what status reports
	}{
		{engine.FaultAfterMap, old, ""},
		{engine.FaultAfterWrite, old, "inactive"},
		{engine.FaultStopped, old, "inactive"},
		// Cut short before the gate: jumps lead to stubs that still run
		// the old code, so the process is fully old until the next apply.
		{engine.FaultMidSwitch, old, "armed"},
		{engine.FaultAfterSwitch, patched, "active"},
	} {
		t.Run(c.fault, func(t *testing.T) {
			p := fixture.Start(t, bin)
			p.WaitFor(t, 0, old, waitLine)
			killedEngine(t, "apply", c.fault, p.PID, file, "")
			if !p.Alive() {
				t.Fatalf("target is not running after the engine died at %s", c.fault)
			}
			if got := settled(t, p); !strings.Contains(got, c.want) {
				t.Fatalf("after dying at %s the target prints %q, want %q", c.fault, got, c.want)
			}
			st, err := engine.Status(p.PID)
			if err != nil {
				t.Fatal(err)
			}
			if c.state != "" && (len(st) != 1 || st[0].State != c.state) {
				t.Errorf("status = %+v, want one patch %s", st, c.state)
			}
			// A fresh engine recovers: it finishes or redoes the apply, and
			// revert leaves nothing behind.
			res := apply(t, p.PID, spec, 5*time.Second)
			if c.fault == engine.FaultMidSwitch && !res.Completed {
				t.Errorf("apply after a cut-short switch should complete it: %+v", res)
			}
			p.WaitFor(t, p.Mark(), patched, waitLine)
			revert(t, p.PID, "two")
			p.WaitFor(t, p.Mark(), old, waitLine)
			maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.PID))
			if strings.Contains(string(maps), "hotpatch") {
				t.Errorf("patch memory left after recovery and revert")
			}
		})
	}
}

func TestEngineKilledDuringRevert(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	raw := fixture.PackBytes(t, bin, object(t, "basic", "two.c"), "two", "compute=compute_v2", "tiny=tiny_v2")
	spec, _ := patchfile.Load(raw)
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	apply(t, p.PID, spec, 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=63 tiny=101", waitLine)
	killedEngine(t, "revert", engine.FaultMidRevert, p.PID, "", "two")
	if got := settled(t, p); !strings.Contains(got, "compute=42 tiny=2 ") {
		t.Fatalf("target prints %q after the revert died", got)
	}
	// The next apply clears the leftover mapping and applies again.
	apply(t, p.PID, spec, 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=63 tiny=101", waitLine)
	if st, _ := engine.Status(p.PID); len(st) != 1 {
		t.Errorf("leftover mapping not collected: %+v", st)
	}
}

// TestEngineKilledDuringRegistration: the engine dies while a thread runs
// __register_frame_info for it. The call stub finishes the call, records
// it, and restores the thread's own context without the engine.
func TestEngineKilledDuringRegistration(t *testing.T) {
	fixture.Require(t)
	bin, obj := buildCXX(t)
	raw := fixture.PackBytes(t, bin, obj, "cxx-fix", "_Z5parsei=_Z8parse_v2i")
	file := filepath.Join(t.TempDir(), "cxx.hp")
	os.WriteFile(file, raw, 0o644)
	spec, err := patchfile.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "caught: bad input", waitLine)
	killedEngine(t, "apply", engine.FaultMidCall, p.PID, file, "")
	if !p.Alive() {
		t.Fatal("target is not running after the engine died inside a remote call")
	}
	mark := p.Mark()
	p.WaitFor(t, mark, "parsed=42", waitLine)
	p.WaitFor(t, mark, "caught: bad input", waitLine)
	// A fresh engine deregisters and removes the leftover, then applies.
	res := apply(t, p.PID, spec, 5*time.Second)
	if !res.UnwindRegistered {
		t.Error("not registered on the second apply")
	}
	mark = p.Mark()
	p.WaitFor(t, mark, "parsed=63", waitLine)
	p.WaitFor(t, mark, "caught: patched: bad input", waitLine)
	if st, _ := engine.Status(p.PID); len(st) != 1 {
		t.Errorf("leftover patch memory not collected: %+v", st)
	}
}

// TestEngineKilledDuringRemoteSyscall: the engine dies while a thread runs
// the injected mmap. The thread returns through the landing frame into
// rt_sigreturn and continues with its own context; its interrupted sleep
// is issued again, so the program sees no error.
func TestEngineKilledDuringRemoteSyscall(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "blocking", "target.c", "blocking")
	raw := fixture.PackBytes(t, bin, object(t, "blocking", "compute_v2.c"), "block-fix", "compute=compute_v2")
	file := filepath.Join(t.TempDir(), "b.hp")
	os.WriteFile(file, raw, 0o644)
	for i := 0; i < 3; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p := fixture.Start(t, bin)
			p.WaitFor(t, 0, "reader blocking", waitLine)
			p.WaitFor(t, 0, "compute=42", waitLine)
			killedEngine(t, "apply", proc.FaultMidSyscall, p.PID, file, "")
			if !p.Alive() {
				t.Fatal("target is not running after the engine died inside a remote system call")
			}
			mark := p.Mark()
			p.WaitFor(t, mark, "compute=42", waitLine)
			p.WaitFor(t, mark+1, "compute=42", waitLine)
			// The blocked calls finish normally afterwards.
			p.Stdin.Write([]byte("hello\n"))
			p.WaitFor(t, 0, "read 6 bytes: hello", waitLine)
			p.WaitFor(t, 0, "sem_wait woke", waitLine)
			for _, l := range p.Lines() {
				if strings.Contains(l, "interrupted") || strings.Contains(l, "failed") {
					t.Errorf("a blocked call saw the engine die: %s", l)
				}
			}
		})
	}
}
