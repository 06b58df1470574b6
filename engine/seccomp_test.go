package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/proc"
)

// TestSeccompFilter: a filter that would kill the process on the engine's
// mmap makes the apply refuse, with the target untouched and alive; a
// filter that lets the engine's calls through does not get in the way.
func TestSeccompFilter(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "seccomp", "target.c", "seccomp")
	obj := object(t, "seccomp", "compute_v2.c")

	p := fixture.Start(t, bin, "kill")
	p.WaitFor(t, 0, "compute=42", waitLine)
	spec := fixture.Pack(t, bin, obj, "seccomp-fix", "compute=compute_v2")
	addr := fixture.FuncAddr(t, p.PID, bin, "compute")
	before := take(t, p.PID, addr, 16)
	_, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 5 * time.Second})
	if !errors.Is(err, proc.ErrSeccomp) || !strings.Contains(err.Error(), "KILL_PROCESS") {
		t.Fatalf("want a seccomp refusal naming the action, got %v", err)
	}
	t.Logf("refused: %v", err)
	before.assertSame(t, take(t, p.PID, addr, 16))
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
	if !p.Alive() {
		t.Fatal("the target died")
	}

	q := fixture.Start(t, bin, "deny-ptrace")
	q.WaitFor(t, 0, "compute=42", waitLine)
	spec = fixture.Pack(t, bin, obj, "seccomp-fix", "compute=compute_v2")
	apply(t, q.PID, spec, 5*time.Second)
	q.WaitFor(t, q.Mark(), "compute=63", waitLine)
	revert(t, q.PID, "seccomp-fix")
	q.WaitFor(t, q.Mark(), "compute=42", waitLine)
}
