package engine_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/proc"
)

// TestUnstoppableThread: a vfork parent sleeps uninterruptibly until its
// child exits, and no tracer can stop it. The engine must not hold the
// other threads stopped meanwhile: each attempt lets them go once the
// thread fails to stop, and the apply succeeds when the child is gone, or
// gives up at its time limit with the target untouched.
func TestUnstoppableThread(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "vforker", "target.c", "vforker")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	spec := fixture.Pack(t, bin, object(t, "vforker", "compute_v2.c"), "vfork-fix", "compute=compute_v2")
	addr := fixture.FuncAddr(t, p.PID, bin, "compute")
	before := take(t, p.PID, addr, 16)

	// Too short a time limit: refused, nothing changed, and the main thread
	// kept running throughout.
	mark := p.Mark()
	io.WriteString(p.Stdin, "1500\n")
	p.WaitFor(t, mark, "vfork child sleeping", waitLine)
	_, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 600 * time.Millisecond})
	if !errors.Is(err, proc.ErrStopTimeout) {
		t.Fatalf("apply during vfork: want ErrStopTimeout, got %v", err)
	}
	if !strings.Contains(err.Error(), "uninterruptible") {
		t.Errorf("error does not say why: %v", err)
	}
	before.assertSame(t, take(t, p.PID, addr, 16))
	p.WaitFor(t, mark, "done", 5*time.Second)
	ticks := 0
	for _, l := range p.Lines()[mark:] {
		if strings.HasPrefix(l, "tick ") {
			ticks++
		}
		if strings.HasSuffix(l, " done") {
			break
		}
	}
	if ticks < 10 {
		t.Errorf("only %d ticks while the apply was retrying: the other threads were held stopped", ticks)
	}
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)

	// A time limit longer than the vfork: applied once the child is gone,
	// with a short pause.
	mark = p.Mark()
	io.WriteString(p.Stdin, "1000\n")
	p.WaitFor(t, mark, "vfork child sleeping", waitLine)
	res := apply(t, p.PID, spec, 10*time.Second)
	if res.Attempts < 2 {
		t.Errorf("applied in %d attempt(s) while a thread could not stop", res.Attempts)
	}
	if res.Pause > 100*time.Millisecond {
		t.Errorf("pause %v: the threads were held stopped while one could not stop", res.Pause)
	}
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
	revert(t, p.PID, "vfork-fix")
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
}
