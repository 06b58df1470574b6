package engine_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hpbuild "github.com/hotpatch/hotpatch/build"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patchfile"
)

// The test binary is also the compiler wrapper build.Build runs
// ("hotpatch cc" in the real tool).
func init() {
	if os.Getenv(hpbuild.EnvRealCompiler) != "" && len(os.Args) > 1 && os.Args[1] == "cc" {
		os.Exit(hpbuild.WrapperMain("gcc", os.Args[2:], os.Stdout, os.Stderr))
	}
}

// waitBuilt is generous: in the arm64 VM every step is emulated.
const waitBuilt = 30 * time.Second

// TestBuiltPatch applies what hotpatch build makes from a source tree and
// a fix (testdata/build/staticlocal: a new static function with its own
// static counter, called from the replaced function, which keeps counting
// in the target's static) to the running program, and reverts it. The
// program and the patch are made together by one fixture step: natively
// with gcc, and for the arm64 VM on the host with the cross compiler
// (make CC=aarch64-linux-gnu-gcc, then build.Build with that compiler).
func TestBuiltPatch(t *testing.T) {
	fixture.Require(t)
	if os.Getenv(fixture.EnvPrebuilt) == "" {
		if _, err := exec.LookPath("make"); err != nil {
			t.Skip("building the program and its patch needs make")
		}
	}
	src := fixture.Path(t, "testdata", "build", "staticlocal")
	dir := t.TempDir()
	bin, img := filepath.Join(dir, "prog"), filepath.Join(dir, "fix.hp")
	fixture.Step(t, "hotpatch build staticlocal", []string{src}, []string{bin, img}, func(cc string, outs []string) error {
		return buildCase(src, cc, outs[0], outs[1])
	})
	spec, err := patchfile.LoadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Machine != hostArch.Machine {
		t.Fatalf("the built patch is for %v, this host is %v", spec.Machine, hostArch.Machine)
	}

	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "mode=old", waitBuilt)
	res := apply(t, p.PID, spec, waitBuilt)
	if len(res.Functions) != 1 || res.Functions[0].Name != "report" {
		t.Errorf("want report replaced, got %+v", res.Functions)
	}
	p.WaitFor(t, p.Mark(), "mode=new calls=2", waitBuilt)
	// The replaced function keeps counting in the target's static variable.
	last, first := -1, -1
	for _, l := range p.Lines() {
		var n int
		if _, err := fmt.Sscanf(l, "count=%d", &n); err != nil {
			continue
		}
		if strings.Contains(l, "mode=old") && first < 0 {
			last = n
		} else if strings.Contains(l, "mode=new") && first < 0 {
			first = n
		}
	}
	if first != last+1 {
		t.Errorf("the counter restarted or skipped: last old count %d, first new count %d", last, first)
	}

	revert(t, p.PID, spec.Meta.ID)
	p.WaitFor(t, p.Mark(), "mode=old", waitBuilt)
}

// buildCase builds a testdata/build case with cc as its user would (make),
// then the patch for its fix with build.Build, and writes the program to
// bin and the patch image to img.
func buildCase(src, cc, bin, img string) error {
	work, err := os.MkdirTemp("", "hotpatch-buildcase-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "src")
	if out, err := exec.Command("cp", "-r", src, tree).CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s: %v\n%s", src, err, out)
	}
	mk := exec.Command("make", "-j2", "CC="+cc)
	mk.Dir = tree
	if out, err := mk.CombinedOutput(); err != nil {
		return fmt.Errorf("make CC=%s: %v\n%s", cc, err, out)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	res, err := hpbuild.Build(context.Background(), hpbuild.Options{
		Src: tree, Diff: filepath.Join(tree, "fix.patch"), Target: filepath.Join(tree, "prog"),
		CC: cc, Jobs: 2, Wrapper: []string{exe, "cc"}, WorkDir: filepath.Join(work, "build"),
	})
	if err != nil {
		return fmt.Errorf("hotpatch build with %s: %w", cc, err)
	}
	prog, err := os.ReadFile(filepath.Join(tree, "prog"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(bin, prog, 0o755); err != nil {
		return err
	}
	return os.WriteFile(img, res.Image, 0o644)
}
