package engine_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestSVEStateKept: the engine's injected system calls run in a thread
// that is in the middle of SVE code; the SVE state a system call discards
// is given back, so the thread's check of its vector and predicate
// registers keeps passing.
func TestSVEStateKept(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "sve", "target.c", "sve")
	obj := object(t, "sve", "compute_v2.c")
	if runtime.GOARCH != "arm64" {
		t.Skip("SVE is arm64's; x86-64 keeps its vector state across system calls")
	}
	p := fixture.Start(t, bin)
	first := p.WaitFor(t, 0, "compute=42 sve=", 2*waitLine)
	if strings.HasSuffix(first, "none") {
		t.Fatal("the VM's CPU has no SVE: the test cannot check anything")
	}
	spec := fixture.Pack(t, bin, obj, "sve-fix", "compute=compute_v2")
	for i := 0; i < 3; i++ {
		apply(t, p.PID, spec, 10*time.Second)
		revert(t, p.PID, "sve-fix")
	}
	mark := p.Mark()
	p.WaitFor(t, mark, "compute=42", 2*waitLine)
	p.WaitFor(t, p.Mark(), "compute=42", 2*waitLine)
	for _, l := range p.Lines() {
		if strings.Contains(l, "sve=corrupt") {
			t.Fatalf("the thread's SVE state was lost: %q", l)
		}
	}
}
