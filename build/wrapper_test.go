package build

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseArgsEdgeCases(t *testing.T) {
	if p := parseArgs([]string{"-c", "-oobj/a.o", "src/a.c"}); p.output != "obj/a.o" || len(p.sources) != 1 {
		t.Errorf("joined -o: %+v", p)
	}
	if p := parseArgs([]string{"-xc", "-c", "gen.inc"}); len(p.sources) != 1 || p.langs[0] != "c" {
		t.Errorf("joined -x: %+v", p)
	}
	if p := parseArgs([]string{"-fsyntax-only", "a.c"}); !p.other {
		t.Errorf("-fsyntax-only writes no object: %+v", p)
	}
	if p := parseArgs([]string{"-x", "c-header", "-o", "a.h.gch", "a.h"}); len(p.sources) != 0 {
		t.Errorf("a precompiled header is no source: %+v", p)
	}
	// The separate compile of a compile-and-link must name the language
	// of each source and must not rewrite the build's dependency file.
	p := parseArgs([]string{"-MD", "-MF", "prog.d", "-MTprog", "-Wp,-MD,x.d", "-o", "prog", "-x", "c", "gen.inc", "-x", "none", "b.c"})
	if !reflect.DeepEqual(p.xlangs, []string{"c", ""}) {
		t.Errorf("languages of the sources: %+v", p)
	}
	if len(p.keepForC) != 0 {
		t.Errorf("kept for separate compiles: %q", p.keepForC)
	}
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"-g", "-c", "a.c"}, true},
		{[]string{"-g3", "-c", "a.c"}, true},
		{[]string{"-gdwarf-4", "-c", "a.c"}, true},
		{[]string{"-g1", "-c", "a.c"}, false},
		{[]string{"-gz", "-c", "a.c"}, false},
		{[]string{"-g", "-g0", "-c", "a.c"}, false},
		{[]string{"-g", "-gz", "-c", "a.c"}, true},
	} {
		if got := parseArgs(c.args).hasDebug; got != c.want {
			t.Errorf("%q: full debug information %v, want %v", c.args, got, c.want)
		}
	}
}

func TestResponseFileArgs(t *testing.T) {
	dir := t.TempDir()
	inner := filepath.Join(dir, "inner.rsp")
	os.WriteFile(inner, []byte("-DB=1\n"), 0o644)
	outer := filepath.Join(dir, "args.rsp")
	os.WriteFile(outer, []byte("-O2 -c -o out/a.o \"src/my file.c\" -DMSG='a b' x\\ y.c @"+inner+"\n"), 0o644)
	p := parseArgs([]string{"@" + outer, "@" + filepath.Join(dir, "missing.rsp")})
	if !p.compile || p.output != "out/a.o" || !reflect.DeepEqual(p.sources, []string{"src/my file.c", "x y.c"}) {
		t.Errorf("response file: %+v", p)
	}
	if !reflect.DeepEqual(p.keepForC, []string{"-O2", "-DMSG=a b", "-DB=1"}) {
		t.Errorf("options: %q", p.keepForC)
	}
	if !reflect.DeepEqual(p.linkInput, []string{"@" + filepath.Join(dir, "missing.rsp")}) {
		t.Errorf("unreadable @FILE: %q", p.linkInput)
	}
}
