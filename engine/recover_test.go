package engine_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
)

// packFile packs a patch into a file a killed engine can load.
func packFile(t *testing.T, bin, obj, id string, replaces ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), id+".hp")
	if err := os.WriteFile(file, fixture.PackBytes(t, bin, obj, id, replaces...), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func statusOf(t *testing.T, pid int, id string) string {
	t.Helper()
	st, err := engine.Status(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.ID == id {
			return s.State
		}
	}
	return ""
}

// TestCompleteArmedPatchAfterAnother: an engine died switching in "b"
// while "a" was already active. Applying "b" again must finish "b", not
// act on another patch's record.
func TestCompleteArmedPatchAfterAnother(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42 tiny=2 ", waitLine)
	apply(t, p.PID, fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "a", "compute=compute_v2"), 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=63 tiny=2 ", waitLine)
	file := packFile(t, bin, object(t, "basic", "tiny_v2.c"), "b", "tiny=tiny_v2")
	killedEngine(t, "apply", engine.FaultMidSwitch, p.PID, file, "")
	if got := statusOf(t, p.PID, "b"); got != "armed" {
		t.Fatalf("b is %q after the engine died mid-switch, want armed", got)
	}
	res := apply(t, p.PID, fixture.Pack(t, bin, object(t, "basic", "tiny_v2.c"), "b", "tiny=tiny_v2"), 5*time.Second)
	if !res.Completed {
		t.Errorf("apply did not complete the armed patch: %+v", res)
	}
	p.WaitFor(t, p.Mark(), "compute=63 tiny=101 ", waitLine)
	if got := statusOf(t, p.PID, "b"); got != "active" {
		t.Errorf("b is %q after completing it, want active", got)
	}
}

// TestArmedPatchUnderStackedPatchIsKept: "a" is left armed by a dying
// engine, "b" is stacked on the same function (its saved bytes are a's
// jump). A later apply must not remove a's memory as stale: reverting b
// puts a's jump back.
func TestArmedPatchUnderStackedPatchIsKept(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42 tiny=2 ", waitLine)
	killedEngine(t, "apply", engine.FaultMidSwitch, p.PID, packFile(t, bin, object(t, "basic", "compute_v2.c"), "a", "compute=compute_v2"), "")
	apply(t, p.PID, fixture.Pack(t, bin, object(t, "basic", "compute_v3.c"), "b", "compute=compute_v3"), 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=105 tiny=2 ", waitLine)
	apply(t, p.PID, fixture.Pack(t, bin, object(t, "basic", "tiny_v2.c"), "c", "tiny=tiny_v2"), 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=105 tiny=101 ", waitLine)
	if got := statusOf(t, p.PID, "a"); got != "armed" {
		t.Errorf("a is %q, want armed (kept under b)", got)
	}
	revert(t, p.PID, "b")
	p.WaitFor(t, p.Mark(), "compute=42 tiny=101 ", waitLine)
	if !p.Alive() {
		t.Fatal("target died after reverting the patch stacked on an armed one")
	}
}

func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	return s[strings.LastIndexByte(s, ')')+2]
}

// TestApplyToStoppedProcess: a process stopped by SIGSTOP is patched and
// stays stopped; it runs the new code once continued.
func TestApplyToStoppedProcess(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	p := fixture.Start(t, bin, "2")
	p.WaitFor(t, 0, "compute=42", waitLine)
	unix.Kill(p.PID, unix.SIGSTOP)
	defer unix.Kill(p.PID, unix.SIGCONT)
	for i := 0; procState(p.PID) != 'T'; i++ {
		if i > 500 {
			t.Fatal("process did not stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	spec := fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "stopped-fix", "compute=compute_v2")
	done := make(chan error, 1)
	go func() {
		_, err := engine.Apply(t.Context(), p.PID, spec, engine.Options{Timeout: 5 * time.Second})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		unix.Kill(p.PID, unix.SIGKILL)
		t.Fatal("apply to a stopped process did not return")
	}
	time.Sleep(50 * time.Millisecond)
	if s := procState(p.PID); s != 'T' {
		t.Errorf("process state %c after apply, want it still stopped", s)
	}
	mark := p.Mark()
	unix.Kill(p.PID, unix.SIGCONT)
	p.WaitFor(t, mark, "compute=63", waitLine)
}

// TestCorruptRecordSize: the state record is read back from the target and
// not trusted. A size reaching past the patch mapping must be refused, not
// unmap the program's own memory.
func TestCorruptRecordSize(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	res := apply(t, p.PID, fixture.Pack(t, bin, object(t, "basic", "compute_v2.c"), "corrupt", "compute=compute_v2"), 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
	mem, err := os.OpenFile("/proc/"+strconv.Itoa(p.PID)+"/mem", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	var size [8]byte
	binary.LittleEndian.PutUint64(size[:], 1<<40) // state record: u64 mapping size at 24
	if _, err := mem.WriteAt(size[:], int64(res.Base)+24); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Revert(t.Context(), p.PID, "corrupt", engine.Options{Timeout: 5 * time.Second}); !errors.Is(err, engine.ErrBadState) {
		t.Errorf("revert with a corrupt record size: want ErrBadState, got %v", err)
	}
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
	if !p.Alive() {
		t.Fatal("target died")
	}
}

// TestCompleteRefusesOtherContents: a leftover armed record is finished
// only by the patch it was made from. Another patch with the same id must
// not switch in the leftover's functions.
func TestCompleteRefusesOtherContents(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "basic", "target.c", "basic")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42 tiny=2 ", waitLine)
	killedEngine(t, "apply", engine.FaultMidSwitch, p.PID, packFile(t, bin, object(t, "basic", "compute_v2.c"), "same", "compute=compute_v2"), "")
	other := fixture.Pack(t, bin, object(t, "basic", "tiny_v2.c"), "same", "tiny=tiny_v2")
	if _, err := engine.Apply(t.Context(), p.PID, other, engine.Options{Timeout: 5 * time.Second}); !errors.Is(err, engine.ErrBadState) {
		t.Errorf("completing a leftover with another patch's contents: want ErrBadState, got %v", err)
	}
	if got := p.WaitFor(t, p.Mark(), "compute=", waitLine); !strings.Contains(got, "compute=42 tiny=2 ") {
		t.Errorf("target runs %q, want the old code", got)
	}
}

// TestCompleteArmedPatchInEntryMode: an engine applying with entry
// consistency died with the patch armed. serve() never returns, so only
// entry consistency can finish the switch, as it could start it.
func TestCompleteArmedPatchInEntryMode(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "forever", "target.c", "forever")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "serve 1 v1", waitLine)
	file := packFile(t, bin, object(t, "forever", "serve_v2.c"), "serve-fix", "serve=serve_v2")
	t.Setenv("HOTPATCH_TEST_CONSISTENCY", string(engine.ConsistencyEntry))
	killedEngine(t, "apply", engine.FaultMidSwitch, p.PID, file, "")
	if got := statusOf(t, p.PID, "serve-fix"); got != "armed" {
		t.Fatalf("serve-fix is %q after the engine died mid-switch, want armed", got)
	}
	spec := fixture.Pack(t, bin, object(t, "forever", "serve_v2.c"), "serve-fix", "serve=serve_v2")
	res, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 2 * time.Second, Consistency: engine.ConsistencyEntry})
	if err != nil {
		t.Fatalf("completing the armed patch in entry mode: %v", err)
	}
	if !res.Completed {
		t.Errorf("apply did not complete the armed patch: %+v", res)
	}
	if got := statusOf(t, p.PID, "serve-fix"); got != "active" {
		t.Errorf("serve-fix is %q after completing it, want active", got)
	}
	mark := p.Mark()
	p.Stdin.Write([]byte("spawn\n"))
	p.WaitFor(t, mark, "serve 2 v2", waitLine)
}
