package engine_test

import (
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestFarPlacement: with no free address space within 136 MiB of the
// image, patch memory goes further away. On arm64 that is out of reach of
// a B: the site takes the 16-byte long jump, and the patch's call to
// printf goes through a stub. On x86-64 a rel32 still reaches.
func TestFarPlacement(t *testing.T) {
	fixture.Require(t)
	bin := build(t, "far", "target.c", "far", "-fPIE", "-pie")
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "fenced ", waitLine)
	p.WaitFor(t, 0, "compute=42", waitLine)
	spec := fixture.Pack(t, bin, object(t, "far", "compute_v2.c"), "far-fix", "compute=compute_v2")
	res := apply(t, p.PID, spec, 5*time.Second)
	if len(res.Functions) != 1 {
		t.Fatalf("functions = %+v", res.Functions)
	}
	fn := res.Functions[0]
	dist := int64(fn.New) - int64(fn.Old)
	if dist < 0 {
		dist = -dist
	}
	if dist < 128<<20 {
		t.Errorf("patch code at %#x is %d MiB from the old function at %#x: the fence did not hold", fn.New, dist>>20, fn.Old)
	}
	want := hostArch.ShortJumpLen
	if dist > hostArch.JumpReach {
		want = hostArch.LongJumpLen
	}
	if fn.JumpLen != want {
		t.Errorf("jump length %d at %d MiB, want %d", fn.JumpLen, dist>>20, want)
	}
	t.Logf("placed %d MiB away, %d-byte jump, gated %v %s", dist>>20, fn.JumpLen, fn.Gated, fn.Ungated)
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)
	revert(t, p.PID, "far-fix")
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
}
