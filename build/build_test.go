package build_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/build"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patchfile"
)

// TestMain lets the test binary act as the compiler wrapper, as the
// hotpatch binary does with "hotpatch cc".
func TestMain(m *testing.M) {
	if os.Getenv(build.EnvRealCompiler) != "" && len(os.Args) > 1 && os.Args[1] == "cc" {
		os.Exit(build.WrapperMain("gcc", os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

const waitLine = 5 * time.Second

func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

func caseDir(t testing.TB, name string) string {
	return filepath.Join(moduleRoot(t), "testdata", "build", name)
}

// builtTree copies a case's project to a temporary directory and builds
// it the way its user would: make, with the given make arguments.
func builtTree(t testing.TB, name string, makeArgs ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("cp", "-r", caseDir(t, name), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("copy: %v\n%s", err, out)
	}
	cmd = exec.Command("make", append([]string{"-j2"}, makeArgs...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	return dir
}

func expect(t testing.TB, dir string) (before, after string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "expect.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "before: "); ok {
			before = v
		}
		if v, ok := strings.CutPrefix(l, "after: "); ok {
			after = v
		}
	}
	return before, after
}

func wrapper(t testing.TB) []string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, "cc"}
}

func buildPatch(t testing.TB, dir, targetName string, mod func(*build.Options)) (*build.Result, error) {
	t.Helper()
	opts := build.Options{
		Src:     dir,
		Diff:    filepath.Join(dir, "fix.patch"),
		Target:  filepath.Join(dir, targetName),
		Jobs:    2,
		Wrapper: wrapper(t),
	}
	if mod != nil {
		mod(&opts)
	}
	start := time.Now()
	res, err := build.Build(context.Background(), opts)
	if err == nil {
		t.Logf("built %s in %v (original %v, patched %v, analysis %v): functions %+v added %v data %v line-only %v bindings %v",
			res.Meta.ID, time.Since(start).Round(time.Millisecond), res.OriginalBuild.Round(time.Millisecond), res.PatchedBuild.Round(time.Millisecond),
			res.Analysis.Round(time.Millisecond), res.Functions, res.Added, res.NewData, res.LineOnly, res.Bindings)
	}
	return res, err
}

func applyImage(t testing.TB, pid int, img []byte) *engine.Result {
	t.Helper()
	spec, err := patchfile.Load(img)
	if err != nil {
		t.Fatalf("load patch: %v", err)
	}
	res, err := engine.Apply(context.Background(), pid, spec, engine.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

// liveCase builds a case, runs it, builds its fix, applies it and checks
// the output changes from the "before" line to the "after" line.
func liveCase(t *testing.T, name, targetName, run string) (*fixture.Proc, *build.Result) {
	t.Helper()
	p, res := startAndPatch(t, name, targetName, run)
	_, after := expect(t, caseDir(t, name))
	p.WaitFor(t, p.Mark(), after, waitLine)
	return p, res
}

// startAndPatch builds a case, runs it until it prints its "before" line
// and applies the fix's patch.
func startAndPatch(t *testing.T, name, targetName, run string) (*fixture.Proc, *build.Result) {
	t.Helper()
	fixture.Require(t)
	dir := builtTree(t, name)
	before, _ := expect(t, dir)
	p := fixture.Start(t, filepath.Join(dir, run))
	p.WaitFor(t, 0, before, waitLine)
	res, err := buildPatch(t, dir, targetName, nil)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	applyImage(t, p.PID, res.Image)
	return p, res
}

func TestChangedBody(t *testing.T) {
	t.Parallel()
	_, res := liveCase(t, "body", "prog", "prog")
	if len(res.Functions) != 1 || res.Functions[0].Name != "compute" {
		t.Errorf("want compute replaced, got %+v", res.Functions)
	}
	checkUnwindTables(t, res, []string{"compute.hotpatch"}) // C: no personality routine
	if got := res.Meta.CVEs; len(got) != 1 || got[0] != "CVE-2099-12345" {
		t.Errorf("CVEs = %v", got)
	}
	if res.Meta.Builder["diff"] != "fix.patch" || len(res.Meta.Builder["diff_sha256"].(string)) != 64 {
		t.Errorf("builder metadata = %v", res.Meta.Builder)
	}
}

func TestNewFunction(t *testing.T) {
	t.Parallel()
	_, res := liveCase(t, "newfunc", "prog", "prog")
	if len(res.Added) != 2 {
		t.Errorf("want bonus and clamp added, got %v", res.Added)
	}
}

func TestInlinedStaticFunction(t *testing.T) {
	t.Parallel()
	_, res := liveCase(t, "inline", "prog", "prog")
	names := map[string]bool{}
	for _, f := range res.Functions {
		names[f.Name] = true
	}
	if !names["area"] || !names["perimeter"] {
		t.Errorf("both callers of the inlined helper must be replaced, got %+v", res.Functions)
	}
}

func TestStaticLocalKeepsCounting(t *testing.T) {
	t.Parallel()
	p, _ := liveCase(t, "staticlocal", "prog", "prog")
	var last, first int
	for _, l := range p.Lines() {
		var n int
		if _, err := fmt.Sscanf(l, "count=%d", &n); err != nil {
			continue
		}
		if strings.Contains(l, "mode=old") {
			last = n
		} else if first == 0 {
			first = n
		}
	}
	if first != last+1 {
		t.Errorf("counter restarted or skipped: last old count %d, first new count %d", last, first)
	}
}

func TestSameStaticNameInTwoFiles(t *testing.T) {
	t.Parallel()
	_, res := liveCase(t, "samename", "prog", "prog")
	if len(res.Functions) != 2 || res.Meta.Functions[0].Old != "check" || res.Meta.Functions[0].OldFile != "b.c" {
		t.Errorf("want check@b.c and check_b replaced, got %+v %+v", res.Functions, res.Meta.Functions)
	}
	// factor exists in a.c and b.c: the reference must be bound to b.c's.
	if !strings.Contains(strings.Join(res.Bindings, " "), "-> check_a+0x") || !strings.Contains(strings.Join(res.Bindings, " "), "(factor@b.c)") {
		t.Errorf("bindings = %v", res.Bindings)
	}
}

func TestChangedStringLiteral(t *testing.T) {
	t.Parallel()
	liveCase(t, "string", "prog", "prog")
}

func TestNewGlobalVariable(t *testing.T) {
	t.Parallel()
	_, res := liveCase(t, "newglobal", "prog", "prog")
	if len(res.NewData) != 2 {
		t.Errorf("want two new variables, got %v", res.NewData)
	}
}

func TestSharedLibrary(t *testing.T) {
	t.Parallel()
	liveCase(t, "sharedlib", "libcalc.so", "prog")
}

func TestCXXMemberFunction(t *testing.T) {
	t.Parallel()
	_, res := liveCase(t, "cxxmember", "prog", "prog")
	if len(res.Functions) != 2 {
		t.Errorf("want Counter::advance and Counter::label, got %+v", res.Functions)
	}
}

// An exception thrown through patch code needs the patch's unwind tables,
// registered by the engine with the target's unwinder. The fix makes parse
// catch validate's exception for multiples of 10 (a catch clause in the
// patch: its LSDA, the type_info it names, the personality routine) and
// rethrow the others to main's catch in the target (unwinding through the
// patch's frame). A process that terminates fails the test.
func TestCXXExceptionThroughPatch(t *testing.T) {
	t.Parallel()
	p, res := startAndPatch(t, "cxxexcept", "prog", "prog")
	checkUnwindTables(t, res, []string{"_Z5parsei.hotpatch"})
	mark := p.Mark()
	deadline := time.Now().Add(waitLine)
	patched, caughtInPatch, passedOn := false, false, false
	for time.Now().Before(deadline) {
		lines := p.Lines()
		for _, l := range lines[mark:] {
			if strings.Contains(l, "terminate called") {
				t.Fatalf("the process terminated when an exception unwound through patch code: %s", l)
			}
			patched = patched || strings.HasPrefix(l, "parsed=7000")
			if !patched {
				continue
			}
			if strings.HasPrefix(l, "patched caught: bad input") {
				caughtInPatch = true
			}
			if strings.HasPrefix(l, "caught: bad input") {
				passedOn = true
			}
		}
		if patched && caughtInPatch && passedOn && p.Alive() {
			t.Logf("exceptions caught in the patched function and passed through it to the target's catch")
			return
		}
		if !p.Alive() && len(p.Lines()) == len(lines) {
			t.Fatalf("the process died; output: %v", lines[max(0, len(lines)-5):])
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("after the patch: new code %v, caught in the patch %v, passed on to the target %v; output: %v",
		patched, caughtInPatch, passedOn, p.Lines()[mark:])
}

// checkUnwindTables checks the patch object's .eh_frame: an FDE for each
// of the functions named and for nothing else (cold parts aside), each
// placed by a relocation into the patch's code, with its CIE and, where a
// personality routine or an LSDA is used, references to the patch's own
// DW.ref cells and .gcc_except_table sections.
func checkUnwindTables(t *testing.T, res *build.Result, want []string) {
	t.Helper()
	spec, err := patchfile.Load(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	fdes, err := build.PatchFDEs(spec)
	if err != nil {
		t.Fatalf("patch .eh_frame: %v", err)
	}
	got := map[string]bool{}
	for _, f := range fdes {
		t.Logf("FDE %+v", f)
		got[f.Function] = true
		if f.Function == "" {
			t.Errorf("FDE placed outside the patch's functions: %+v", f)
		}
		if f.Personality != "" && f.Personality != "__gxx_personality_v0" {
			t.Errorf("personality %q", f.Personality)
		}
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("no FDE for %s; FDEs: %+v", w, fdes)
		}
		delete(got, w)
	}
	for f := range got {
		if !strings.Contains(f, ".cold") {
			t.Errorf("unexpected FDE for %s", f)
		}
	}
}

func TestRefusals(t *testing.T) {
	fixture.Require(t)
	cases := []struct {
		dir, kind, symbol, text string
		warning                 bool
	}{
		{"refuse-datasize", "data-size", "table", "size of existing data changes from 16 to 32 bytes", false},
		{"refuse-datainit", "data-init", "limit@data.c", "initial value of existing data changes", false},
		{"refuse-ctor", "constructor", "init@data.c", "constructors already ran", false},
		{"refuse-staticremoved", "static-local-removed", "calls.0@data.c", "no longer uses this static variable", true},
		{"refuse-staticremoved-cxx", "static-local-removed", "_ZZ4stepiE5calls@data.cc", "no longer uses this static variable", true},
		{"refuse-newtls", "new-tls", "depth@data.c", "new thread-local variable", false},
		{"refuse-newtls-extern", "new-tls", "depth", "new thread-local variable", false},
		{"refuse-struct", "struct-layout", "struct config", "existing data of the old layout is used by variable cfg", false},
		{"refuse-typedefstruct", "struct-layout", "typedef config_t", "existing data of the old layout is used by variable cfg", false},
		{"refuse-structparam", "struct-layout", "struct req", "existing data of the old layout is used by function handle", false},
	}
	for _, c := range cases {
		t.Run(c.dir, func(t *testing.T) {
			t.Parallel()
			dir := builtTree(t, c.dir)
			_, err := buildPatch(t, dir, "prog", nil)
			var re *build.RefusalError
			if !errors.Is(err, build.ErrRefused) || !errors.As(err, &re) {
				t.Fatalf("want a refusal, got %v", err)
			}
			found := false
			for _, r := range re.Refusals {
				found = found || (r.Kind == c.kind && r.Symbol == c.symbol && strings.Contains(r.Reason, c.text) && r.Warning == c.warning)
			}
			if !found {
				t.Fatalf("want %s of %s (%q), got %v", c.kind, c.symbol, c.text, err)
			}
			t.Logf("refused: %v", err)
			if c.warning {
				res, err := buildPatch(t, dir, "prog", func(o *build.Options) { o.Force = true })
				if err != nil {
					t.Fatalf("with Force: %v", err)
				}
				if len(res.Warnings) != 1 || res.Meta.Builder["accepted_warnings"] == nil {
					t.Errorf("accepted warnings not reported: %+v", res.Warnings)
				}
			}
		})
	}
}

func TestLineNumberOnlyChange(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "lineonly")
	res, err := buildPatch(t, dir, "prog", nil)
	if err != nil {
		t.Fatal(err)
	}
	// gcc may split the assert's cold path into helper.part.0.
	if len(res.LineOnly) != 1 || !strings.HasPrefix(res.LineOnly[0], "helper") {
		t.Errorf("line-only = %v, want helper", res.LineOnly)
	}
	for _, f := range res.Functions {
		if strings.HasPrefix(f.Name, "helper") {
			t.Errorf("helper changed only in line numbers but is replaced")
		}
	}
	if len(res.Functions) != 1 || res.Functions[0].Name != "step" {
		t.Errorf("functions = %+v, want step", res.Functions)
	}
}

// The running binary was built with other flags than the tree's build
// command uses: run-pre matching must notice and say where.
func TestRunPreMismatch(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "body", "CFLAGS=-O1")
	_, err := buildPatch(t, dir, "prog", nil)
	var me *build.MismatchError
	if !errors.Is(err, build.ErrMismatch) || !errors.As(err, &me) || me.Function != "compute" {
		t.Fatalf("want a mismatch in compute, got %v", err)
	}
	t.Logf("refused: %v", err)
}

func TestNoChanges(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "body")
	empty := filepath.Join(t.TempDir(), "comment.patch")
	os.WriteFile(empty, []byte("--- a/compute.c\n+++ b/compute.c\n@@ -1,2 +1,3 @@\n #include \"compute.h\"\n+/* nothing */\n \n"), 0o644)
	_, err := buildPatch(t, dir, "prog", func(o *build.Options) { o.Diff = empty })
	if !errors.Is(err, build.ErrNoChanges) {
		t.Fatalf("want ErrNoChanges, got %v", err)
	}
}

func TestBadDiff(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "body")
	bad := filepath.Join(t.TempDir(), "bad.patch")
	os.WriteFile(bad, []byte("--- a/compute.c\n+++ b/compute.c\n@@ -1,1 +1,1 @@\n-no such line\n+x\n"), 0o644)
	_, err := buildPatch(t, dir, "prog", func(o *build.Options) { o.Diff = bad })
	var de *build.DiffError
	if !errors.Is(err, build.ErrBadDiff) || !errors.As(err, &de) || de.File != "compute.c" {
		t.Fatalf("want a DiffError on compute.c, got %v", err)
	}
}

// TestStampGuardedSubBuild: a tree whose sub-build is guarded by a stamp
// file builds from its already-built state, and a fix inside that sub-build,
// which the fixed build would not compile again, is refused by name.
func TestStampGuardedSubBuild(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "stampdep")
	if _, err := buildPatch(t, dir, "prog", nil); err != nil {
		t.Fatalf("fix in the main build: %v", err)
	}
	_, err := buildPatch(t, dir, "prog", func(o *build.Options) { o.Diff = filepath.Join(dir, "dep.patch") })
	if !errors.Is(err, build.ErrUnsupported) || !strings.Contains(err.Error(), "dep/dep.c") {
		t.Fatalf("fix in a stamp-guarded sub-build: want ErrUnsupported naming dep/dep.c, got %v", err)
	}
}
