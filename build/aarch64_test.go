package build_test

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/build"
	"github.com/hotpatch/hotpatch/link"
	"github.com/hotpatch/hotpatch/patchfile"
	"github.com/hotpatch/hotpatch/target"
)

// The builder for aarch64 targets, run on any host with a cross compiler:
// the cases of testdata/build are built with aarch64-linux-gnu-gcc, as a
// user cross-building for an arm64 machine would, and the patches are
// checked here and linked by the engine's linker. engine/buildcase_test.go
// applies one in a live process on arm64.

const (
	crossCC  = "aarch64-linux-gnu-gcc"
	crossCXX = "aarch64-linux-gnu-g++" // found by the builder as crossCC's sibling
)

func needCross(t *testing.T) {
	t.Helper()
	for _, tool := range []string{crossCC, "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the aarch64 builder tests need %s on PATH (apt-get install gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu make)", tool)
		}
	}
}

// crossTree copies a case and builds it with the cross compiler.
func crossTree(t *testing.T, name string, makeArgs ...string) string {
	t.Helper()
	return builtTree(t, name, append([]string{"CC=" + crossCC, "CXX=" + crossCXX}, makeArgs...)...)
}

func crossPatch(t *testing.T, dir, targetName string, mod func(*build.Options)) (*build.Result, error) {
	t.Helper()
	return buildPatch(t, dir, targetName, func(o *build.Options) {
		o.CC = crossCC
		if mod != nil {
			mod(o)
		}
	})
}

// checkARM64Patch loads the image, checks that it is an aarch64 object
// whose relocations are all aarch64 ones the engine applies, and links it
// against the target's symbols at an address near the target.
func checkARM64Patch(t *testing.T, res *build.Result, targetPath string) *patchfile.Spec {
	t.Helper()
	spec, err := patchfile.Load(res.Image)
	if err != nil {
		t.Fatalf("load patch: %v", err)
	}
	if spec.Machine != elf.EM_AARCH64 || spec.Meta.Arch != "arm64" {
		t.Fatalf("patch machine %v, arch %q; want EM_AARCH64, arm64", spec.Machine, spec.Meta.Arch)
	}
	for _, s := range spec.Sections {
		for _, r := range s.Relocs {
			if _, ok := arch.ARM64.Relocs[r.Type]; !ok {
				t.Errorf("%s: relocation type %v is not one the engine applies", s.Name, elf.R_AARCH64(r.Type))
			}
		}
	}
	syms, err := target.LoadSymbols(targetPath, targetPath)
	if err != nil {
		t.Fatal(err)
	}
	const bias, far = 0x5555_0000_0000, 0x7fff_0000_0000
	resolve := func(name string, tls bool) (link.Resolved, error) {
		if s, err := syms.Lookup(name, ""); err == nil && s.Section != elf.SHN_UNDEF {
			if s.Type == elf.STT_TLS {
				return link.Resolved{TLS: true, TPOff: 16 + int64(s.Value), Origin: "base"}, nil
			}
			return link.Resolved{Addr: bias + s.Value, Size: s.Size, Origin: "base"}, nil
		}
		if tls {
			return link.Resolved{}, errors.New(name + ": thread-local import")
		}
		return link.Resolved{Addr: far, Far: true, Origin: "libc.so.6"}, nil // an import
	}
	plan, err := link.NewPlan(spec, arch.ARM64, 4096, 0, 0, resolve)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	if _, err := plan.Link(bias + 0x100_0000); err != nil {
		t.Fatalf("link: %v", err)
	}
	return spec
}

func functionNames(res *build.Result) []string {
	var out []string
	for _, f := range res.Functions {
		out = append(out, f.Name)
	}
	sort.Strings(out)
	return out
}

// TestARM64Cases builds the live cases' fixes for aarch64 targets.
func TestARM64Cases(t *testing.T) {
	needCross(t)
	cases := []struct {
		dir, target string
		functions   string // replaced, sorted, comma-separated
		added, data int
	}{
		{"body", "prog", "compute", 0, 0},
		{"newfunc", "prog", "compute", 2, 0},
		{"inline", "prog", "area,perimeter", 0, 0},
		{"staticlocal", "prog", "report", 1, 1},
		{"samename", "prog", "check,check_b", 0, 0},
		{"string", "prog", "greet", 0, 0},
		{"newglobal", "prog", "compute", 0, 2},
		{"sharedlib", "libcalc.so", "lib_compute", 0, 0},
		{"staticsection", "prog", "report", 0, 0},
		{"runpre-call", "prog", "compute,stamp", 0, 0},
		{"cxxmember", "prog", "_ZN7Counter7advanceEv,_ZNK7Counter5labelB5cxx11Ev", 0, 0},
	}
	for _, c := range cases {
		t.Run(c.dir, func(t *testing.T) {
			t.Parallel()
			if _, err := exec.LookPath(crossCXX); err != nil && strings.HasPrefix(c.dir, "cxx") {
				t.Skipf("needs %s (apt-get install g++-aarch64-linux-gnu)", crossCXX)
			}
			dir := crossTree(t, c.dir)
			res, err := crossPatch(t, dir, c.target, nil)
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			checkARM64Patch(t, res, filepath.Join(dir, c.target))
			if got := strings.Join(functionNames(res), ","); got != c.functions {
				t.Errorf("replaced %s, want %s", got, c.functions)
			}
			if len(res.Added) != c.added || len(res.NewData) != c.data {
				t.Errorf("new functions %v (want %d), new data %v (want %d)", res.Added, c.added, res.NewData, c.data)
			}
			if c.dir == "samename" {
				// factor@b.c is bound through an anchor symbol, as on x86-64.
				if b := strings.Join(res.Bindings, " "); !strings.Contains(b, "(factor@b.c)") {
					t.Errorf("bindings = %v", res.Bindings)
				}
			}
		})
	}
}

// TestARM64Refusals: the same fixes are refused for the same reasons.
func TestARM64Refusals(t *testing.T) {
	needCross(t)
	cases := []struct{ dir, kind, symbol, text string }{
		{"refuse-datasize", "data-size", "table", "size of existing data changes from 16 to 32 bytes"},
		{"refuse-datainit", "data-init", "limit@data.c", "initial value of existing data changes"},
		{"refuse-ctor", "constructor", "init@data.c", "constructors already ran"},
		{"refuse-staticremoved", "static-local-removed", "calls.0@data.c", "no longer uses this static variable"},
		{"refuse-newtls", "new-tls", "depth@data.c", "new thread-local variable"},
		{"refuse-newtls-extern", "new-tls", "depth", "new thread-local variable"},
		{"refuse-struct", "struct-layout", "struct config", "existing data of the old layout is used by variable cfg"},
	}
	for _, c := range cases {
		t.Run(c.dir, func(t *testing.T) {
			t.Parallel()
			dir := crossTree(t, c.dir)
			_, err := crossPatch(t, dir, "prog", nil)
			var re *build.RefusalError
			if !errors.As(err, &re) {
				t.Fatalf("want a refusal, got %v", err)
			}
			for _, r := range re.Refusals {
				if r.Kind == c.kind && r.Symbol == c.symbol && strings.Contains(r.Reason, c.text) {
					return
				}
			}
			t.Fatalf("want %s of %s (%q), got %v", c.kind, c.symbol, c.text, err)
		})
	}
}

func TestARM64LineNumberOnlyChange(t *testing.T) {
	t.Parallel()
	needCross(t)
	dir := crossTree(t, "lineonly")
	res, err := crossPatch(t, dir, "prog", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.LineOnly) != 1 || !strings.HasPrefix(res.LineOnly[0], "helper") || strings.Join(functionNames(res), ",") != "step" {
		t.Errorf("line-only %v, replaced %v; want helper left out and step replaced", res.LineOnly, functionNames(res))
	}
}

// The target built with other flags than the tree's build command uses.
func TestARM64RunPreMismatch(t *testing.T) {
	t.Parallel()
	needCross(t)
	dir := crossTree(t, "body", "CFLAGS=-O1")
	_, err := crossPatch(t, dir, "prog", nil)
	var me *build.MismatchError
	if !errors.As(err, &me) || me.Function != "compute" {
		t.Fatalf("want a mismatch in compute, got %v", err)
	}
	t.Logf("refused: %v", err)
}

// A compiler for another machine than the target's is refused before
// anything is built, saying which compiler to use.
func TestWrongMachine(t *testing.T) {
	t.Parallel()
	needCross(t)
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs the host's gcc")
	}
	host := machineOfHostGCC(t)
	arm := crossTree(t, "body")
	// The host's gcc for an aarch64 target (on an x86-64 host).
	if host != "aarch64" {
		_, err := buildPatch(t, arm, "prog", nil)
		if !errors.Is(err, build.ErrWrongMachine) || !strings.Contains(err.Error(), "--cc aarch64-linux-gnu-gcc") {
			t.Errorf("aarch64 target, host gcc: want ErrWrongMachine naming --cc aarch64-linux-gnu-gcc, got %v", err)
		}
		// The cross compiler for an x86-64 target.
		native := builtTree(t, "body")
		_, err = crossPatch(t, native, "prog", nil)
		if !errors.Is(err, build.ErrWrongMachine) || !strings.Contains(err.Error(), "target is x86-64") {
			t.Errorf("x86-64 target, aarch64 compiler: want ErrWrongMachine, got %v", err)
		}
	}
	// A compiler that does not exist.
	_, err := buildPatch(t, arm, "prog", func(o *build.Options) { o.CC = "no-such-cc" })
	if !errors.Is(err, build.ErrUnsupported) || !strings.Contains(err.Error(), "no-such-cc") {
		t.Errorf("missing compiler: got %v", err)
	}
}

func machineOfHostGCC(t *testing.T) string {
	out, err := exec.Command("gcc", "-dumpmachine").Output()
	if err != nil {
		t.Fatal(err)
	}
	arch, _, _ := strings.Cut(string(out), "-")
	return arch
}

// The CLI takes the cross compiler from --cc or from CC, and a wrong one is
// a one-line error saying what to use.
func TestCLICrossCompiler(t *testing.T) {
	t.Parallel()
	needCross(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the CLI test needs the go command")
	}
	bin := hotpatchBinary(t)
	dir := crossTree(t, "string")
	args := func(out string) []string {
		return []string{"build", "--src", dir, "--diff", filepath.Join(dir, "fix.patch"), "--target", filepath.Join(dir, "prog"), "--jobs", "2", "-o", out}
	}
	out := filepath.Join(t.TempDir(), "fix.hp")
	cmd := exec.Command(bin, append(args(out), "--cc", crossCC)...)
	if text, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(text), "replace greet (compute.c)") {
		t.Fatalf("hotpatch build --cc %s: %v\n%s", crossCC, err, text)
	}
	cmd = exec.Command(bin, append(args(out+".env"), "--id", "from-env")...)
	cmd.Env = append(os.Environ(), "CC="+crossCC)
	if text, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CC=%s hotpatch build: %v\n%s", crossCC, err, text)
	}
	text, err := exec.Command(bin, "inspect", out+".env").CombinedOutput()
	if err != nil || !strings.Contains(string(text), "arm64 (EM_AARCH64)") {
		t.Errorf("inspect: %v\n%s", err, text)
	}
	if machineOfHostGCC(t) != "aarch64" {
		cmd = exec.Command(bin, append(args(out+".host"), "--cc", "gcc")...)
		text, err = cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(text), "hotpatch: wrong machine: compiler") || strings.Count(strings.TrimSpace(string(text)), "\n") != 0 {
			t.Errorf("want a one-line machine error, got %v:\n%s", err, text)
		}
	}
}

// On aarch64 the original build's compile keeps gcc's section anchors
// (only function sections are added) and a second compile gives the
// analysis object, with a section per variable; the fixed build compiles
// only the analysis way.
func TestWrapperAnalysisCompile(t *testing.T) {
	needCross(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "a.c")
	if err := os.WriteFile(src, []byte("static int a = 1, b = 2;\nint get(int i) { a += i; b ^= a; return a + b; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sections := func(path string) map[string]bool {
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out := map[string]bool{}
		for _, s := range f.Sections {
			out[s.Name] = true
		}
		return out
	}
	compile := func(stage string) build.CompileRecord {
		logDir := t.TempDir()
		t.Setenv(build.EnvLogDir, logDir)
		t.Setenv(build.EnvRealCompiler, crossCC)
		t.Setenv(build.EnvMachine, "aarch64")
		t.Setenv(build.EnvStage, stage)
		if code := build.WrapperMain("gcc", []string{"-O2", "-c", "-o", filepath.Join(dir, "a.o"), src}, io.Discard, os.Stderr); code != 0 {
			t.Fatalf("%s compile: exit %d", stage, code)
		}
		recs, err := filepath.Glob(filepath.Join(logDir, "*.json"))
		if err != nil || len(recs) != 1 {
			t.Fatalf("%s compile: records %v, %v", stage, recs, err)
		}
		data, err := os.ReadFile(recs[0])
		if err != nil {
			t.Fatal(err)
		}
		var rec build.CompileRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	orig := compile("original")
	if own := sections(orig.Copy); !own[".text.get"] || !own[".data"] || own[".data.a"] {
		t.Errorf("the build's own object should have function sections and one .data: %v", own)
	}
	// The analysis compile is recorded, and run by the builder only for
	// the sources the fixed build compiles again.
	if orig.Analysis != "" || len(orig.AnalysisArgs) == 0 {
		t.Fatalf("the original build should record its analysis compile, not run it: %+v", orig)
	}
	analysis := filepath.Join(t.TempDir(), "a.analysis.o")
	cmd := exec.Command(orig.Compiler, append(orig.AnalysisArgs, "-o", analysis)...)
	cmd.Dir, cmd.Env = orig.Dir, orig.Env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("analysis compile: %v\n%s", err, out)
	}
	if an := sections(analysis); !an[".text.get"] || !an[".data.a"] || !an[".data.b"] {
		t.Errorf("the analysis object should have a section per variable: %v", an)
	}
	patched := compile("patched")
	if patched.Analysis != "" || !sections(patched.Copy)[".data.a"] {
		t.Errorf("the fixed build should compile once, the analysis way: %+v", patched)
	}
}

// The running binary was built from a source whose functions have the
// same code but read other data: another constant in a switch table
// (CSWTCH), another thread-local variable of the file or of another file,
// another global variable. Each is read in every form GNU ld leaves it in:
// local exec; initial exec and descriptors relaxed to local exec in an
// executable; descriptors kept in a shared library; GOT slots of a
// position-independent executable (RELATIVE), of a shared library (named)
// and of -fpic's small GOT model (LD64_GOTPAGE_LO15). Run-pre matching
// must see each; built as the tree says, the fix is accepted.
func TestARM64RunPreData(t *testing.T) {
	t.Parallel()
	needCross(t)
	type variant struct {
		target string
		flags  string   // added to CFLAGS
		extra  []string // more make arguments
	}
	// The builds of the tree make only the target, so that one object of
	// calc.c is matched.
	makeArgs := func(v variant, define string) []string {
		cflags := "CFLAGS=-O2 -Wall" + v.flags
		if define != "" {
			cflags += " -D" + define
		}
		return append([]string{v.target, cflags}, v.extra...)
	}
	var (
		exe      = variant{target: "prog"}
		exePIC   = variant{target: "prog", flags: " -fPIC"}
		lib      = variant{target: "libcalc.so"}
		libSmall = variant{target: "libcalc.so", extra: []string{"PIC=-fpic"}}
	)
	for _, c := range []struct {
		name, define, function string
		v                      variant
	}{
		{"table", "ALT_TABLE", "pick", exe},
		{"tls-le", "ALT_MINE", "mine", exe},
		{"tls-ie-relaxed", "ALT_THEIRS", "theirs", exe},
		{"got-pie", "ALT_GLOBAL", "global", exe},
		{"tlsdesc-relaxed-local", "ALT_MINE", "mine", exePIC},
		{"tlsdesc-relaxed-extern", "ALT_THEIRS", "theirs", exePIC},
		{"tlsdesc-lib-mine", "ALT_MINE", "mine", lib},
		{"tlsdesc-lib-theirs", "ALT_THEIRS", "theirs", lib},
		{"got-lib", "ALT_GLOBAL", "global", lib},
		{"got-fpic", "ALT_GLOBAL", "global", libSmall},
		{"table-lib", "ALT_TABLE", "pick", libSmall},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := crossTree(t, "runpre-data", makeArgs(c.v, c.define)...)
			_, err := crossPatch(t, dir, c.v.target, func(o *build.Options) {
				o.BuildCmd = "make " + shellArgs(makeArgs(c.v, ""))
			})
			var me *build.MismatchError
			if !errors.As(err, &me) || me.Function != c.function {
				t.Fatalf("want a mismatch in %s, got %v", c.function, err)
			}
			t.Logf("refused: %v", err)
		})
	}
	for _, v := range []variant{exe, exePIC, lib, libSmall} {
		t.Run("same-"+v.target+v.flags+strings.Join(v.extra, ""), func(t *testing.T) {
			t.Parallel()
			dir := crossTree(t, "runpre-data", makeArgs(v, "")...)
			res, err := crossPatch(t, dir, v.target, func(o *build.Options) {
				o.BuildCmd = "make " + shellArgs(makeArgs(v, ""))
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(functionNames(res), ","); got != "global,mine,pick,theirs" {
				t.Errorf("replaced %s", got)
			}
			checkARM64Patch(t, res, filepath.Join(dir, v.target))
		})
	}
}

// shellArgs quotes make arguments for a build command.
func shellArgs(args []string) string {
	var out []string
	for _, a := range args {
		out = append(out, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	return strings.Join(out, " ")
}

// IPA-RA: the target's total() keeps values in registers that get(), as
// the build's own (anchored) compile made it, does not write; the analysis
// compile's get() writes them. A fix of get() alone leaves total() the
// same between the two analysis compiles, so the patch would put a get()
// that clobbers total()'s values under the target's total(): refused; so
// is a fixed total2() that keeps a value where the target's get2() (with
// anchors) writes. With
// total() replaced too, or when the callee's callers change with it
// (leaf() and scaled()), the patch is made.
func TestARM64IPARA(t *testing.T) {
	t.Parallel()
	needCross(t)
	dir := crossTree(t, "ipara")
	_, err := crossPatch(t, dir, "prog", nil)
	var re *build.RefusalError
	if !errors.As(err, &re) || len(re.Refusals) != 1 || re.Refusals[0].Kind != "register-use" || re.Refusals[0].Symbol != "get@calc.c" ||
		!strings.Contains(re.Refusals[0].Reason, "total") || !strings.Contains(re.Refusals[0].Reason, "-fno-ipa-ra") {
		t.Fatalf("want a register-use refusal of get@calc.c naming total and -fno-ipa-ra, got %v", err)
	}
	t.Logf("refused: %v", err)
	// The other way round: the fixed total2() keeps a value in a register
	// the target's get2() writes.
	_, err = crossPatch(t, dir, "prog", func(o *build.Options) { o.Diff = filepath.Join(dir, "fix-caller.patch") })
	if !errors.As(err, &re) || len(re.Refusals) != 1 || re.Refusals[0].Kind != "register-use" || re.Refusals[0].Symbol != "total2" ||
		!strings.Contains(re.Refusals[0].Reason, "calls get2") {
		t.Fatalf("want a register-use refusal of total2 naming get2, got %v", err)
	}
	t.Logf("refused: %v", err)
	for _, c := range []struct{ diff, functions string }{
		{"fix-both.patch", "get,total"},
		{"fix-leaf.patch", "leaf,scaled"},
	} {
		res, err := crossPatch(t, dir, "prog", func(o *build.Options) { o.Diff = filepath.Join(dir, c.diff) })
		if err != nil {
			t.Fatalf("%s: %v", c.diff, err)
		}
		if got := strings.Join(functionNames(res), ","); got != c.functions {
			t.Errorf("%s: replaced %s, want %s", c.diff, got, c.functions)
		}
		checkARM64Patch(t, res, filepath.Join(dir, "prog"))
	}
}

// A versioned cross compiler (aarch64-linux-gnu-gcc-12) finds its C++
// sibling of the same version: the C++ case compiles with it.
func TestVersionedCrossCompiler(t *testing.T) {
	t.Parallel()
	needCross(t)
	const cc, cxx = crossCC + "-12", crossCXX + "-12"
	for _, tool := range []string{cc, cxx} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	dir := crossTree(t, "cxxmember")
	res, err := crossPatch(t, dir, "prog", func(o *build.Options) { o.CC = cc })
	if err != nil {
		t.Fatalf("--cc %s: %v", cc, err)
	}
	checkARM64Patch(t, res, filepath.Join(dir, "prog"))
}

// With --cc and no --cxx, the CLI derives the C++ compiler from --cc; an
// exported CXX (the host's g++) is for another compiler and is not used.
func TestCLICrossCompilerIgnoresHostCXX(t *testing.T) {
	t.Parallel()
	needCross(t)
	if _, err := exec.LookPath(crossCXX); err != nil {
		t.Skipf("needs %s", crossCXX)
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the CLI test needs the go command")
	}
	bin := hotpatchBinary(t)
	dir := crossTree(t, "cxxmember")
	out := filepath.Join(t.TempDir(), "fix.hp")
	cmd := exec.Command(bin, "build", "--src", dir, "--diff", filepath.Join(dir, "fix.patch"), "--target", filepath.Join(dir, "prog"),
		"--jobs", "2", "--cc", crossCC, "-o", out)
	cmd.Env = append(os.Environ(), "CXX=g++", "CC=gcc")
	if text, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CXX=g++ hotpatch build --cc %s: %v\n%s", crossCC, err, text)
	}
}

// Strings and jump tables (testdata/build/runpre-table) on aarch64, where
// gas refers to a string as its section's symbol plus an offset and gcc's
// jump tables hold (case - anchor) / 4 without relocations. say() refers
// to a string that is not the first of its section; step() has a jump
// table next to other()'s. The target must match the tree's build when
// built the same way, and when built with -falign-labels=16 (the same code
// with padding before its labels, so other entries); it must not when
// say()'s second string differs or step()'s table leads cases 16 and 17
// to each other's code.
func TestARM64RunPreStringsAndTables(t *testing.T) {
	t.Parallel()
	needCross(t)
	runPreStringsAndTables(t, crossTree, crossPatch)
}

// The original build's analysis objects are compiled after the fixed
// build, only for the sources it compiled again, from the sources as they
// were: genheader's fix changes scale.txt, from which the build makes
// gen.h (already made in the user's tree, so the fixed build writes it
// again), and util.c, which includes version.h, written again by every
// build. compute changes only through gen.h's old and new SCALE.
func TestARM64AnalysisCompilesAfterFixedBuild(t *testing.T) {
	needCross(t)
	dir := crossTree(t, "genheader")
	// An object the fix does not touch: compiled once, never for analysis.
	if err := os.WriteFile(filepath.Join(dir, "other.c"), []byte("int other(int x) { return x + 1; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "work")
	res, err := crossPatch(t, dir, "prog", func(o *build.Options) {
		o.BuildCmd = "make && { test -f other.o || $CC -O2 -c other.c; }"
		o.WorkDir, o.KeepWork = work, true
	})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	checkARM64Patch(t, res, filepath.Join(dir, "prog"))
	if got := strings.Join(functionNames(res), ","); got != "compute,offset" {
		t.Errorf("replaced %s, want compute,offset", got)
	}
	if res.AnalysisCompile <= 0 {
		t.Errorf("no analysis compiles timed")
	}
	objs, err := filepath.Glob(filepath.Join(work, "log-original", "objects", "*.analysis.o"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, strings.SplitN(filepath.Base(o), "-", 2)[0])
	}
	sort.Strings(names)
	if got := strings.Join(names, ","); got != "main.c,util.c" {
		t.Errorf("analysis objects of the original build: %s, want main.c,util.c", got)
	}
	// The tree is left as the fixed build made it.
	if data, err := os.ReadFile(filepath.Join(work, "src", "gen.h")); err != nil || string(data) != "#define SCALE 5\n" {
		t.Errorf("gen.h after the build: %q, %v", data, err)
	}
	if data, err := os.ReadFile(filepath.Join(work, "src", "util.c")); err != nil || !strings.Contains(string(data), "VERSION + 1") {
		t.Errorf("util.c after the build: %q, %v", data, err)
	}
}

// A file the fixed build writes again, that an analysis compile reads and
// whose content before the fix is nowhere (written outside the tree's
// copy, here by the build into a directory outside it), stops the build.
func TestARM64AnalysisCompileInputLost(t *testing.T) {
	needCross(t)
	dir := crossTree(t, "body")
	inc := t.TempDir()
	res, err := crossPatch(t, dir, "prog", func(o *build.Options) {
		o.BuildCmd = "echo '#define EXTRA 1' > " + inc + "/extra.h && make CFLAGS='-O2 -include " + inc + "/extra.h'"
	})
	if err == nil || !errors.Is(err, build.ErrUnsupported) || !strings.Contains(err.Error(), "extra.h") {
		t.Fatalf("want ErrUnsupported naming extra.h, got %v, %v", res, err)
	}
}
