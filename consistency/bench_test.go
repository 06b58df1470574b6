//go:build linux && amd64

package consistency

import (
	"runtime"
	"testing"
	"time"
)

// benchThreads stops a fixture with 16 threads (15 workers and main, one
// worker spinning in inner) and runs fn on it.
func benchThreads(b *testing.B, flags []string, fn func(b *testing.B, tr *tracee, ranges []Range)) {
	f := buildFixture(b, flags...)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tr := startTracee(b, f, 16, "threads", "15")
	time.Sleep(5 * time.Millisecond)
	tr.stop(b, f)
	defer tr.detach(b)
	if len(tr.threads) != 16 {
		b.Fatalf("want 16 threads, got %d", len(tr.threads))
	}
	ranges := []Range{tr.rangeOf(f, "middle"), tr.rangeOf(f, "unrelated")}
	fn(b, tr, ranges)
}

func checkOnce(b *testing.B, tr *tracee, mods *Modules, ranges []Range) Result {
	res, err := Check(AMD64, mods, tr.memory(), tr.threads, ranges)
	if err != nil {
		b.Fatal(err)
	}
	if len(res.Busy) != 1 {
		b.Fatalf("want one busy thread, got %v", res.Busy)
	}
	return res
}

// BenchmarkCheck16Threads is the steady state: CFI rows already cached,
// as on a retry after a busy result.
func BenchmarkCheck16Threads(b *testing.B) {
	benchThreads(b, []string{"-O2"}, func(b *testing.B, tr *tracee, ranges []Range) {
		res := checkOnce(b, tr, tr.mods, ranges)
		b.ResetTimer()
		for b.Loop() {
			checkOnce(b, tr, tr.mods, ranges)
		}
		b.ReportMetric(float64(res.Frames), "frames/op")
	})
}

// BenchmarkCheck16ThreadsCold is the first Check after loading modules.
func BenchmarkCheck16ThreadsCold(b *testing.B) {
	benchThreads(b, []string{"-O2"}, func(b *testing.B, tr *tracee, ranges []Range) {
		maps := readMaps(b, tr.pid)
		var bias uint64
		f := &fixture{}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			mods := loadModules(b, tr.pid, maps, tr.mem, f, &bias)
			runtime.GC() // keep the loader's garbage out of the timing
			b.StartTimer()
			checkOnce(b, tr, mods, ranges)
		}
	})
}

// BenchmarkCheck16ThreadsNoCFI has no CFI for the fixture's functions, so
// every thread ends in a conservative scan.
func BenchmarkCheck16ThreadsNoCFI(b *testing.B) {
	benchThreads(b, []string{"-O2", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"}, func(b *testing.B, tr *tracee, ranges []Range) {
		res := checkOnce(b, tr, tr.mods, ranges)
		if res.Fallbacks == 0 {
			b.Fatal("expected conservative scans")
		}
		b.ResetTimer()
		for b.Loop() {
			checkOnce(b, tr, tr.mods, ranges)
		}
		b.ReportMetric(float64(res.Fallbacks), "fallbacks/op")
	})
}
