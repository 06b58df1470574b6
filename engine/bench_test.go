package engine_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
)

// benchTarget writes a C program with nfuncs replaceable functions and
// nthreads threads that keep running: each computes for about 30 µs, then
// sleeps 1 ms, like a busy but not saturated server (16 threads use about
// half a core). The main thread calls every replaceable function each
// millisecond.
func benchTarget(b *testing.B, dir string, nthreads, nfuncs int) (bin, obj string, replaces []string) {
	var t, p strings.Builder
	t.WriteString("#include <pthread.h>\n#include <stdio.h>\n#include <unistd.h>\n")
	for i := 0; i < nfuncs; i++ {
		fmt.Fprintf(&t, "__attribute__((noipa)) int f%d(int x) { return x + %d; }\n", i, i)
		fmt.Fprintf(&p, "int f%d_v2(int x) { return x + %d; }\n", i, i+1000)
		replaces = append(replaces, fmt.Sprintf("f%d=f%d_v2", i, i))
	}
	t.WriteString("__attribute__((noipa)) int work(int x) { for (volatile int i = 0; i < 20000; i++) x += i; return x; }\n")
	t.WriteString("static void *run(void *a) { (void)a; for (;;) { work(1); usleep(1000); } return 0; }\n")
	fmt.Fprintf(&t, "int main(void) { for (int i = 0; i < %d; i++) { pthread_t t; pthread_create(&t, 0, run, 0); }\n", nthreads-1)
	fmt.Fprintf(&t, "  puts(\"ready\"); fflush(stdout); for (;;) { int s = 0;")
	for i := 0; i < nfuncs; i++ {
		fmt.Fprintf(&t, " s += f%d(1);", i)
	}
	t.WriteString(" (void)s; work(1); usleep(1000); } }\n")
	src, psrc := filepath.Join(dir, "t.c"), filepath.Join(dir, "p.c")
	os.WriteFile(src, []byte(t.String()), 0o644)
	os.WriteFile(psrc, []byte(p.String()), 0o644)
	bin, obj = filepath.Join(dir, "t"), filepath.Join(dir, "p.o")
	fixture.GCC(b, "-O2", "-pthread", "-o", bin, src)
	fixture.GCC(b, "-c", "-O2", "-fPIC", "-o", obj, psrc)
	return bin, obj, replaces
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// BenchmarkApply measures, per apply: the pause (every thread stopped, from
// the first stop to the last resume) and the whole apply. Each iteration
// applies and reverts the patch.
//
//	go test -run=^$ -bench=Apply -benchtime=50x ./engine/
func BenchmarkApply(b *testing.B) {
	fixture.Require(b)
	for _, nthreads := range []int{1, 4, 16, 64} {
		for _, nfuncs := range []int{1, 10, 100} {
			b.Run(fmt.Sprintf("threads=%d/funcs=%d", nthreads, nfuncs), func(b *testing.B) {
				bin, obj, replaces := benchTarget(b, b.TempDir(), nthreads, nfuncs)
				p := fixture.Start(b, bin)
				p.WaitFor(b, 0, "ready", 10*time.Second)
				spec := fixture.Pack(b, bin, obj, "bench", replaces...)
				var pauses, totals, revertPauses, stops, checks []time.Duration
				attempts := 0
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					res, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 30 * time.Second})
					if err != nil {
						b.Fatal(err)
					}
					pauses = append(pauses, res.Pause)
					stops = append(stops, res.Phases.Stop)
					checks = append(checks, res.Phases.Check)
					if os.Getenv("HOTPATCH_BENCH_PHASES") != "" && res.Pause > time.Millisecond {
						b.Logf("pause %v: %+v", res.Pause, res.Phases)
					}
					totals = append(totals, res.Total)
					attempts += res.Attempts
					rr, err := engine.Revert(context.Background(), p.PID, "bench", engine.Options{Timeout: 30 * time.Second})
					if err != nil {
						b.Fatal(err)
					}
					revertPauses = append(revertPauses, rr.Pause)
				}
				b.StopTimer()
				us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
				b.ReportMetric(us(percentile(pauses, 0.5)), "pause-p50-µs")
				b.ReportMetric(us(percentile(pauses, 0.99)), "pause-p99-µs")
				b.ReportMetric(us(percentile(totals, 0.5)), "apply-p50-µs")
				b.ReportMetric(us(percentile(totals, 0.99)), "apply-p99-µs")
				b.ReportMetric(us(percentile(revertPauses, 0.5)), "revert-pause-p50-µs")
				b.ReportMetric(us(percentile(stops, 0.5)), "stop-p50-µs")
				b.ReportMetric(us(percentile(checks, 0.5)), "check-p50-µs")
				b.ReportMetric(float64(attempts)/float64(b.N), "attempts/op")
				if !p.Alive() {
					b.Fatal("target died")
				}
			})
		}
	}
}
