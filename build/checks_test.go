package build_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/build"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patchfile"
)

// The running binary calls another file's scale_b where the tree calls
// scale_a: run-pre matching must check references to symbols the object
// does not define as well.
func TestRunPreMismatchedCallee(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "runpre-call", "CFLAGS=-O2 -Wall -DALT")
	_, err := buildPatch(t, dir, "prog", nil)
	var me *build.MismatchError
	if !errors.Is(err, build.ErrMismatch) || !errors.As(err, &me) || me.Function != "compute" || !strings.Contains(err.Error(), "scale_a") {
		t.Fatalf("want a mismatch in compute naming scale_a, got %v", err)
	}
	t.Logf("refused: %v", err)
	dir = builtTree(t, "runpre-call", "CFLAGS=-O2 -Wall -DALT_LIB")
	_, err = buildPatch(t, dir, "prog", nil)
	if !errors.Is(err, build.ErrMismatch) || !errors.As(err, &me) || me.Function != "stamp" || !strings.Contains(err.Error(), "getppid") {
		t.Fatalf("want a mismatch in stamp naming getppid's PLT entry, got %v", err)
	}
	t.Logf("refused: %v", err)
	// Built as the tree says, the same fix is accepted.
	dir = builtTree(t, "runpre-call")
	if _, err := buildPatch(t, dir, "prog", nil); err != nil {
		t.Fatalf("matching build: %v", err)
	}
}

// A file compiled through a response file (gcc @FILE) is seen like any
// other: a fix in a header both files include replaces functions of both.
func TestResponseFile(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "respfile")
	res, err := buildPatch(t, dir, "prog", nil)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range res.Functions {
		names[f.Name] = true
	}
	if !names["area"] || !names["perimeter"] {
		t.Errorf("want area (compiled through @calc.rsp) and perimeter replaced, got %+v", res.Functions)
	}
}

// A source the original build did not compile (its object looked up to
// date) but the fixed build did has nothing to be compared with: its
// changes must not be taken for a new file's and dropped.
func TestSourceNotCompiledByOriginalBuild(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "staleobj")
	res, err := buildPatch(t, dir, "prog", nil)
	if err == nil {
		for _, f := range res.Functions {
			if f.Name == "lookup" {
				return
			}
		}
		t.Fatalf("lookup changed in table.src but is not replaced: %+v", res.Functions)
	}
	if !errors.Is(err, build.ErrUnsupported) || !strings.Contains(err.Error(), "table.src") {
		t.Fatalf("want lookup replaced or ErrUnsupported naming table.src, got %v", err)
	}
	t.Logf("refused: %v", err)
}

// The fix makes gcc split report into report.part.0, which then uses the
// static counter; another function has a static of the same name. The
// counter must be bound to the running one by the function that uses it.
func TestStaticLocalInSplitFunction(t *testing.T) {
	t.Parallel()
	p, res := liveCase(t, "staticlocal-clone", "prog", "prog")
	if len(res.Warnings) != 0 || len(res.NewData) != 0 {
		t.Errorf("warnings %v, new data %v", res.Warnings, res.NewData)
	}
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

// An off-by-one fix (cmp $17 -> cmp $18) in a file the fix also moves down
// by one line looks like a __LINE__ shift of line 17
// to 18; that line changed, so it is a real change.
func TestLineOnlyNotAssumedForChangedLines(t *testing.T) {
	t.Parallel()
	_, res := liveCase(t, "lineonly-real", "prog", "prog")
	if len(res.LineOnly) != 0 || len(res.Functions) != 1 || res.Functions[0].Name != "check" {
		t.Errorf("want check replaced, got functions %+v, line-only %v", res.Functions, res.LineOnly)
	}
}

// In a shared library a global is read through its GOT slot; the running
// library reads limit_b where the tree reads limit_a.
func TestRunPreMismatchedGOTSlot(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "runpre-got", "CFLAGS=-O2 -Wall -DALT")
	_, err := buildPatch(t, dir, "libcalc.so", nil)
	var me *build.MismatchError
	if !errors.Is(err, build.ErrMismatch) || !errors.As(err, &me) || me.Function != "clamp" || !strings.Contains(err.Error(), "limit_a") {
		t.Fatalf("want a mismatch in clamp naming limit_a, got %v", err)
	}
	t.Logf("refused: %v", err)
	// Linked -Bsymbolic, the GOT loads are relaxed to lea limit_b(%rip).
	dir = builtTree(t, "runpre-got", "CFLAGS=-O2 -Wall -DALT", "LDFLAGS=-Wl,-Bsymbolic")
	_, err = buildPatch(t, dir, "libcalc.so", nil)
	if !errors.Is(err, build.ErrMismatch) || !errors.As(err, &me) || me.Function != "clamp" || !strings.Contains(err.Error(), "limit_a") {
		t.Fatalf("relaxed: want a mismatch in clamp naming limit_a, got %v", err)
	}
	t.Logf("refused: %v", err)
	dir = builtTree(t, "runpre-got", "LDFLAGS=-Wl,-Bsymbolic")
	if _, err := buildPatch(t, dir, "libcalc.so", nil); err != nil {
		t.Fatalf("matching relaxed build: %v", err)
	}
	dir = builtTree(t, "runpre-got")
	if _, err := buildPatch(t, dir, "libcalc.so", nil); err != nil {
		t.Fatalf("matching build: %v", err)
	}
}

// The same two changes as a series of two patches to one file: the line
// map of the second alone must not make the first look like a line shift.
func TestLineOnlyPatchSeries(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "lineonly-real")
	res, err := buildPatch(t, dir, "prog", func(o *build.Options) { o.Diff = dir + "/series.patch" })
	if err != nil {
		t.Fatal(err)
	}
	if len(res.LineOnly) != 0 || len(res.Functions) != 1 || res.Functions[0].Name != "check" {
		t.Errorf("want check replaced, got functions %+v, line-only %v", res.Functions, res.LineOnly)
	}
}

// scale.c is compiled twice, into scale_8 and scale_16, both linked into
// the program: the fix changes both.
func TestSourceCompiledIntoTwoVariants(t *testing.T) {
	t.Parallel()
	_, res := liveCase(t, "variants", "prog", "prog")
	if len(res.Functions) != 2 {
		t.Errorf("want scale_8 and scale_16 replaced, got %+v", res.Functions)
	}
}

// Statics that share a named section are referenced relative to the
// section; a store of a constant into the first one has its field 8 bytes
// before the end of the instruction. They must still be bound to the
// running program's, not copied.
func TestStaticsInNamedSection(t *testing.T) {
	t.Parallel()
	p, res := liveCase(t, "staticsection", "prog", "prog")
	if len(res.NewData) != 0 || len(res.Constants) != 0 {
		t.Errorf("existing statics carried as new data %v, constants %v", res.NewData, res.Constants)
	}
	spec, err := patchfile.Load(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range spec.Sections {
		if sec.Name == ".counters" {
			t.Errorf("the patch carries its own copy of the statics' section")
		}
	}
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

// Built with -ffile-prefix-map, as distributions build, the line tables
// name files outside the tree; line-only changes are still recognized.
func TestLineOnlyWithPrefixMap(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	flags := "CFLAGS=-O2 -Wall -ffile-prefix-map=$(CURDIR)=/usr/src/pkg"
	dir := builtTree(t, "lineonly", flags)
	res, err := buildPatch(t, dir, "prog", func(o *build.Options) { o.BuildCmd = "make '" + flags + "'" })
	if err != nil {
		t.Fatal(err)
	}
	if len(res.LineOnly) != 1 || !strings.HasPrefix(res.LineOnly[0], "helper") || len(res.Functions) != 1 || res.Functions[0].Name != "step" {
		t.Errorf("functions %+v, line-only %v; want step, and helper line-only", res.Functions, res.LineOnly)
	}
}

// The running binary's switch table (CSWTCH) holds another constant; the
// code is the same. The table is copied into the patch, not bound, so
// run-pre matching compares its bytes.
func TestRunPreSwitchTable(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "runpre-data", "prog", "CFLAGS=-O2 -Wall -DALT_TABLE")
	_, err := buildPatch(t, dir, "prog", func(o *build.Options) { o.BuildCmd = "make prog" })
	var me *build.MismatchError
	if !errors.As(err, &me) || me.Function != "pick" || !strings.Contains(err.Error(), "CSWTCH") {
		t.Fatalf("want a mismatch in pick naming its CSWTCH table, got %v", err)
	}
	dir = builtTree(t, "runpre-data", "prog")
	if _, err := buildPatch(t, dir, "prog", func(o *build.Options) { o.BuildCmd = "make prog" }); err != nil {
		t.Fatalf("matching build: %v", err)
	}
}

// IPA-RA on x86-64: scaled() keeps a value in a register leaf() does not
// write; the fix makes leaf() write it. There is one compile, so the fixed
// build compiles scaled() knowing that, and it changes: both are replaced.
// A fix of get() alone (which leaves get()'s registers as they are on
// x86-64) replaces get() only.
func TestIPARACallerChanged(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	dir := builtTree(t, "ipara")
	for _, c := range []struct{ diff, functions string }{
		{"fix-leaf.patch", "leaf,scaled"},
		{"fix.patch", "get"},
	} {
		res, err := buildPatch(t, dir, "prog", func(o *build.Options) { o.Diff = filepath.Join(dir, c.diff) })
		if err != nil {
			t.Fatalf("%s: %v", c.diff, err)
		}
		var names []string
		for _, f := range res.Functions {
			names = append(names, f.Name)
		}
		sort.Strings(names)
		if got := strings.Join(names, ","); got != c.functions {
			t.Errorf("%s: replaced %s, want %s", c.diff, got, c.functions)
		}
	}
}

// The x86-64 counterpart of TestARM64RunPreData: the running binary's
// functions have the same code as the tree's but read another thread-local
// or global variable, in each form GNU ld leaves the access in: local exec
// (TPOFF32); initial exec relaxed to local exec; general and local dynamic
// relaxed to local exec in an executable and kept in a shared library
// (the GOT's module/offset pairs, DTPOFF32 offsets); initial exec kept in
// a shared library (TPOFF64 slots, named or holding the offset); a GOT slot
// ld did not relax in a position-independent executable (RELATIVE).
// Run-pre matching must see each; built as the tree says, the fix is
// accepted.
func TestRunPreData(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	type variant struct {
		target string
		flags  string   // added to CFLAGS
		extra  []string // more make arguments
	}
	makeArgs := func(v variant, define string) []string {
		cflags := "CFLAGS=-O2 -Wall" + v.flags
		if define != "" {
			cflags += " -D" + define
		}
		return append([]string{v.target, cflags}, v.extra...)
	}
	var (
		exe     = variant{target: "prog"}
		exePIC  = variant{target: "prog", flags: " -fPIC"}
		noRelax = variant{target: "prog", flags: " -fPIC", extra: []string{"LDFLAGS=-Wl,--no-relax"}}
		lib     = variant{target: "libcalc.so"}
		libIE   = variant{target: "libcalc.so", extra: []string{"PIC=-fPIC -ftls-model=initial-exec"}}
	)
	for _, c := range []struct {
		name, define, function string
		v                      variant
	}{
		{"table", "ALT_TABLE", "pick", exe},
		{"tls-le", "ALT_MINE", "mine", exe},
		{"tls-ie-relaxed", "ALT_THEIRS", "theirs", exe},
		{"tls-gd-relaxed-local", "ALT_MINE", "mine", exePIC},
		{"tls-gd-relaxed-extern", "ALT_THEIRS", "theirs", exePIC},
		{"tls-ld-relaxed", "ALT_STATIC", "stat", exePIC},
		{"got-relative", "ALT_GLOBAL", "global", noRelax},
		{"tls-gd-lib-mine", "ALT_MINE", "mine", lib},
		{"tls-gd-lib-theirs", "ALT_THEIRS", "theirs", lib},
		{"tls-ld-lib", "ALT_STATIC", "stat", lib},
		{"tls-ie-lib-mine", "ALT_MINE", "mine", libIE},
		{"tls-ie-lib-static", "ALT_STATIC", "stat", libIE},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := builtTree(t, "runpre-data-x86", makeArgs(c.v, c.define)...)
			_, err := buildPatch(t, dir, c.v.target, func(o *build.Options) {
				o.BuildCmd = "make " + shellArgs(makeArgs(c.v, ""))
			})
			var me *build.MismatchError
			if !errors.As(err, &me) || me.Function != c.function {
				t.Fatalf("want a mismatch in %s, got %v", c.function, err)
			}
			t.Logf("refused: %v", err)
		})
	}
	for _, v := range []variant{exe, exePIC, noRelax, lib, libIE} {
		t.Run("same-"+v.target+v.flags+strings.Join(v.extra, ""), func(t *testing.T) {
			t.Parallel()
			dir := builtTree(t, "runpre-data-x86", makeArgs(v, "")...)
			res, err := buildPatch(t, dir, v.target, func(o *build.Options) {
				o.BuildCmd = "make " + shellArgs(makeArgs(v, ""))
			})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range res.Functions {
				names = append(names, f.Name)
			}
			sort.Strings(names)
			if got := strings.Join(names, ","); got != "global,mine,pick,stat,theirs" {
				t.Errorf("replaced %s", got)
			}
		})
	}
}

// The x86-64 counterpart of TestARM64RunPreStringsAndTables: gas names the
// strings (.LC), and the jump table's PC-relative entries are relocated;
// they too must lead to the corresponding code.
func TestRunPreStringsAndTables(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	runPreStringsAndTables(t, func(t *testing.T, name string, args ...string) string { return builtTree(t, name, args...) },
		func(t *testing.T, dir, target string, mod func(*build.Options)) (*build.Result, error) {
			return buildPatch(t, dir, target, mod)
		})
}

func runPreStringsAndTables(t *testing.T, tree func(*testing.T, string, ...string) string,
	patch func(*testing.T, string, string, func(*build.Options)) (*build.Result, error)) {
	for _, c := range []struct {
		name, cflags string
		function     string // the mismatch; "" for a match
		detail       string
	}{
		{"same", "", "", ""},
		{"padding", " -falign-labels=16", "", ""},
		{"string", " -DALT_STRING", "say", `"the value is small.\x00"`},
		{"cases", " -DALT_CASES", "step", "jump table"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := tree(t, "runpre-table", "CFLAGS=-O2 -Wall"+c.cflags)
			res, err := patch(t, dir, "prog", nil)
			if c.function == "" {
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, f := range res.Functions {
					names = append(names, f.Name)
				}
				sort.Strings(names)
				if got := strings.Join(names, ","); got != "say,step" {
					t.Errorf("replaced %s, want say,step", got)
				}
				return
			}
			var me *build.MismatchError
			if !errors.As(err, &me) || me.Function != c.function || !strings.Contains(err.Error(), c.detail) {
				t.Fatalf("want a mismatch in %s naming %s, got %v", c.function, c.detail, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}
