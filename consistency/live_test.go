//go:build linux && amd64

package consistency

import (
	"debug/elf"
	"errors"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var variants = []struct {
	name  string
	flags []string
	// precise: the fixture functions have CFI, so no scan is expected.
	precise bool
}{
	{"O2", []string{"-O2"}, true},
	{"O0", []string{"-O0"}, true},
	{"O2-framepointer", []string{"-O2", "-fno-omit-frame-pointer"}, true},
	{"O0-no-framepointer", []string{"-O0", "-fomit-frame-pointer"}, true},
	{"O2-pie", []string{"-O2", "-fPIE", "-pie"}, true},
	{"O2-nopie", []string{"-O2", "-fno-pie", "-no-pie"}, true},
	{"O2-debug-frame", []string{"-O2", "-g", "-fno-asynchronous-unwind-tables"}, true},
	{"O2-no-cfi", []string{"-O2", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"}, false},
}

func TestLiveChain(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			f := buildFixture(t, v.flags...)
			if v.name == "O2-debug-frame" {
				ef, err := elf.Open(f.path)
				if err != nil {
					t.Fatal(err)
				}
				if ef.Section(".debug_frame") == nil {
					t.Fatal("fixture has no .debug_frame")
				}
				ef.Close()
			}
			for _, mode := range []string{"spin", "pause"} {
				t.Run(mode, func(t *testing.T) { liveChain(t, f, mode, v.precise) })
			}
		})
	}
}

func liveChain(t *testing.T, f *fixture, mode string, precise bool) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tr := startTracee(t, f, 1, mode)
	tr.stop(t, f)
	defer tr.detach(t)
	inner := tr.rangeOf(f, "inner")
	// The announcement precedes the loop; on a loaded machine the thread
	// may not have got there yet.
	for try := 0; mode == "spin" && (tr.threads[0].PC < inner.Lo || tr.threads[0].PC >= inner.Hi); try++ {
		if try == 100 {
			t.Fatalf("spinning thread PC %#x not in inner [%#x, %#x)", tr.threads[0].PC, inner.Lo, inner.Hi)
		}
		tr.detach(t)
		time.Sleep(10 * time.Millisecond)
		tr.stop(t, f)
	}

	th := tr.threads
	if len(th) != 1 {
		t.Fatalf("want 1 thread, got %d", len(th))
	}

	for _, tc := range []struct {
		fn    string
		frame int // expected frame in spin mode when precise
	}{{"inner", 0}, {"middle", 1}, {"outer", 2}} {
		res, err := Check(AMD64, tr.mods, tr.memory(), th, []Range{tr.rangeOf(f, tc.fn), tr.rangeOf(f, "unrelated")})
		if err != nil {
			t.Fatalf("%s: %v", tc.fn, err)
		}
		if len(res.Busy) != 1 || res.Busy[0].Range.Name != tc.fn || res.Busy[0].TID != th[0].TID {
			t.Fatalf("%s: want one busy hit in %s, got %v (err %v)", tc.fn, tc.fn, res.Busy, res.Err())
		}
		b := res.Busy[0]
		t.Logf("%s: %v; frames %d, fallbacks %d", tc.fn, b, res.Frames, res.Fallbacks)
		if !errors.Is(res.Err(), ErrBusy) {
			t.Fatalf("Err() = %v, want ErrBusy", res.Err())
		}
		if precise {
			if !b.Precise || res.Fallbacks != 0 {
				t.Errorf("%s: want a precise hit without fallback, got %v (fallbacks %d)", tc.fn, b, res.Fallbacks)
			}
			if mode == "spin" && b.Frame != tc.frame {
				t.Errorf("%s: frame %d, want %d", tc.fn, b.Frame, tc.frame)
			}
		} else if tc.fn != "inner" || mode != "spin" {
			if res.Fallbacks != 1 {
				t.Errorf("%s: want a conservative scan, got %d fallbacks", tc.fn, res.Fallbacks)
			}
		}
	}

	res, err := Check(AMD64, tr.mods, tr.memory(), th, []Range{tr.rangeOf(f, "unrelated"), tr.rangeOf(f, "idle")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Busy) != 0 || res.Err() != nil {
		t.Fatalf("unrelated: want not busy, got %v", res.Busy)
	}
	if precise && res.Fallbacks != 0 {
		t.Errorf("unrelated: %d fallbacks, want 0", res.Fallbacks)
	}
	t.Logf("unrelated: not busy; frames %d, fallbacks %d", res.Frames, res.Fallbacks)
}

func TestLiveThreads(t *testing.T) {
	f := buildFixture(t, "-O2")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const workers = 6
	// One inner, workers-1 idle, one main announcement.
	tr := startTracee(t, f, workers+1, "threads", "6")
	time.Sleep(5 * time.Millisecond)
	tr.stop(t, f)
	defer tr.detach(t)
	if len(tr.threads) != workers+1 {
		t.Fatalf("want %d threads, got %d", workers+1, len(tr.threads))
	}
	busyTID := tr.lines["inner"][0]
	idle := map[int]bool{}
	for _, tid := range tr.lines["idle"] {
		idle[tid] = true
	}

	start := time.Now()
	res, err := Check(AMD64, tr.mods, tr.memory(), tr.threads, []Range{tr.rangeOf(f, "inner")})
	t.Logf("Check of %d threads took %v (cold row cache)", len(tr.threads), time.Since(start))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Busy) != 1 || res.Busy[0].TID != busyTID || !res.Busy[0].Precise {
		t.Fatalf("want only thread %d busy in inner, got %v", busyTID, res.Busy)
	}
	if res.Fallbacks != 0 {
		t.Errorf("%d fallbacks, want 0", res.Fallbacks)
	}

	start = time.Now()
	res, err = Check(AMD64, tr.mods, tr.memory(), tr.threads, []Range{tr.rangeOf(f, "idle"), tr.rangeOf(f, "unrelated")})
	t.Logf("Check of %d threads took %v (warm)", len(tr.threads), time.Since(start))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Busy) != len(idle) {
		t.Fatalf("want %d idle threads busy, got %v", len(idle), res.Busy)
	}
	for _, b := range res.Busy {
		if !idle[b.TID] || b.Range.Name != "idle" || !b.Precise {
			t.Errorf("unexpected hit %v", b)
		}
	}

	mem := &countingMem{m: tr.memory()}
	res, err = Check(AMD64, tr.mods, mem, tr.threads, []Range{tr.rangeOf(f, "unrelated")})
	if err != nil || len(res.Busy) != 0 || res.Fallbacks != 0 {
		t.Fatalf("unrelated: busy %v, fallbacks %d, err %v", res.Busy, res.Fallbacks, err)
	}
	t.Logf("unrelated: %d frames over %d threads, %d reads of %d bytes", res.Frames, len(tr.threads), mem.reads, mem.bytes)
	if mem.reads > len(tr.threads) {
		t.Errorf("%d reads for %d threads, want one bulk read each", mem.reads, len(tr.threads))
	}
}

// A thread running a signal handler: the signal frame's CFI (DWARF
// expressions) leads precisely back into the interrupted frames.
func TestLiveSignalHandler(t *testing.T) {
	tr, f := startInHandler(t, "signal")
	defer tr.detach(t)
	check := func(fn string) (Result, error) {
		return Check(AMD64, tr.mods, tr.memory(), tr.threads, []Range{tr.rangeOf(f, fn)})
	}
	if res, err := check("on_signal"); err != nil || len(res.Busy) != 1 || !res.Busy[0].Precise || res.Busy[0].Frame != 0 {
		t.Fatalf("on_signal: got %v, %v", res.Busy, err)
	}
	for _, fn := range []string{"inner", "middle", "outer"} {
		res, err := check(fn)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Busy) != 1 || !res.Busy[0].Precise || res.Fallbacks != 0 {
			t.Fatalf("%s: got %v, fallbacks %d", fn, res.Busy, res.Fallbacks)
		}
		t.Logf("%s: %v (frames %d)", fn, res.Busy[0], res.Frames)
	}
	if res, err := check("unrelated"); err != nil || len(res.Busy) != 0 || res.Fallbacks != 0 {
		t.Fatalf("unrelated: got %v, fallbacks %d, %v", res.Busy, res.Fallbacks, err)
	}
}

// A handler on an alternate signal stack: the interrupted frames are on
// the thread's normal stack, which Check was not given, so it must fail
// rather than call the thread safe.
func TestLiveSignalAltStack(t *testing.T) {
	tr, f := startInHandler(t, "altstack")
	defer tr.detach(t)
	res, err := Check(AMD64, tr.mods, tr.memory(), tr.threads, []Range{tr.rangeOf(f, "middle")})
	if err == nil && len(res.Busy) == 0 {
		t.Fatal("thread on an alternate signal stack reported safe")
	}
	t.Logf("busy %v, error: %v", res.Busy, err)
}

func startInHandler(t *testing.T, mode string) (*tracee, *fixture) {
	f := buildFixture(t, "-O2")
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	tr := startTracee(t, f, 1, mode)
	if err := unix.Tgkill(tr.pid, tr.lines["inner"][0], unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	tr.await(t, 1)
	time.Sleep(5 * time.Millisecond)
	tr.stop(t, f)
	return tr, f
}

type countingMem struct {
	m            Memory
	reads, bytes int
}

func (c *countingMem) ReadAt(p []byte, addr uint64) (int, error) {
	c.reads++
	c.bytes += len(p)
	return c.m.ReadAt(p, addr)
}
