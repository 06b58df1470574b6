package engine_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestBusyOnAlternateStack: a thread whose signal handler runs on an
// alternate stack, having interrupted the function being replaced, is
// found inside it by unwinding from the handler's stack onto the thread's
// own, and the switch waits until it has left.
func TestBusyOnAlternateStack(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "altstack", "target.c", "altstack")
	spec := fixture.Pack(t, bin, object(t, "altstack", "compute_v2.c"), "alt-fix", "compute=compute_v2")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "spinning in compute", waitLine)
	if err := syscall.Kill(p.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.WaitFor(t, 0, "handler running", waitLine)
	_, err := engine.Apply(context.Background(), p.PID, spec, engine.Options{Timeout: 300 * time.Millisecond})
	if !errors.Is(err, engine.ErrBusy) || !strings.Contains(err.Error(), "is in compute") {
		t.Fatalf("want busy in compute, found by unwinding through the handler, got %v", err)
	}
	t.Logf("busy: %v", err)
	p.WaitFor(t, 0, "handler done", 2*waitLine)
	p.WaitFor(t, 0, "compute=42", waitLine)
	apply(t, p.PID, spec, 5*time.Second)
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
}
