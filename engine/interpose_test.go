package engine_test

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestLibraryDataCopiedIntoExecutable: a patch to a shared library that
// reads the library's exported variable must reach the live copy the
// executable holds (a copy relocation), not the library's unused original.
func TestLibraryDataCopiedIntoExecutable(t *testing.T) {
	fixture.Require(t)
	dir := t.TempDir()
	src := fixture.Dir(t, "sharedlib")
	lib := filepath.Join(dir, "libdata.so")
	fixture.GCC(t, "-O2", "-g", "-shared", "-fPIC", "-o", lib, filepath.Join(src, "data.c"))
	bin := filepath.Join(dir, "datamain")
	fixture.GCC(t, "-O2", "-o", bin, filepath.Join(src, "data_main.c"), "-L"+dir, "-ldata", "-Wl,-rpath,$ORIGIN")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "counter=", waitLine)
	spec := fixture.Pack(t, lib, object(t, "sharedlib", "data_v2.c"), "data-fix", "lib_get=lib_get_v2")
	mark := p.Mark()
	apply(t, p.PID, spec, 5*time.Second)
	// The first line that differs from the old code's (get == counter); a
	// line printed just before the switch may still be the old one.
	re := regexp.MustCompile(`get=(\d+) counter=(\d+)`)
	for deadline := time.Now().Add(waitLine); ; time.Sleep(10 * time.Millisecond) {
		for _, line := range p.Lines()[mark:] {
			m := re.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			get, _ := strconv.Atoi(m[1])
			counter, _ := strconv.Atoi(m[2])
			if get == counter {
				continue
			}
			if get != counter+1000 {
				t.Fatalf("patched code read %d, want the live counter %d + 1000 (it read the library's unused original)", get-1000, counter)
			}
			t.Logf("patched: %s", line)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no patched line after %v:\n%s", waitLine, strings.Join(p.Lines()[mark:], "\n"))
		}
	}
}

// TestIFuncWithoutIRelative: an IFUNC of a library that no IRELATIVE
// relocation resolved (as arm64 glibc's memcpy) is reached through the
// caller's slot once bound, and through its PLT entry while still lazy.
func TestIFuncWithoutIRelative(t *testing.T) {
	fixture.Require(t)
	dir := t.TempDir()
	src := fixture.Dir(t, "ifunclib")
	lib := filepath.Join(dir, "libpick.so")
	fixture.GCC(t, "-O2", "-g", "-shared", "-fPIC", "-o", lib, filepath.Join(src, "pick.c"))
	bin := filepath.Join(dir, "main")
	fixture.GCC(t, "-O2", "-o", bin, filepath.Join(src, "main.c"), "-L"+dir, "-lpick", "-Wl,-rpath,$ORIGIN", "-Wl,-z,lazy")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42 bound=101", waitLine)
	spec := fixture.Pack(t, bin, object(t, "ifunclib", "use.c"), "ifunc-lib", "compute=compute_v2")
	res := apply(t, p.PID, spec, 5*time.Second)
	t.Logf("imports: %+v", res.Imports)
	// 21+100 from the bound slot's implementation, 21+200 through the
	// lazy PLT entry, which binds pick_lazy on this first call.
	p.WaitFor(t, p.Mark(), "compute=342 bound=101", waitLine)
	revert(t, p.PID, "ifunc-lib")
	p.WaitFor(t, p.Mark(), "compute=42 bound=101", waitLine)
}
