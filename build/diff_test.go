package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sampleDiff = `From: someone
Subject: [PATCH] parser: bound the length (CVE-2024-12345, CVE-2023-0001)

Also fixes CVE-2024-12345 again.

diff --git a/src/p.c b/src/p.c
index 111..222 100644
--- a/src/p.c
+++ b/src/p.c
@@ -2,3 +2,4 @@
 two
-three
+THREE
+three-and-a-half
 four
@@ -8,2 +9,2 @@
 eight
-nine
+NINE
diff --git a/new.c b/new.c
new file mode 100644
--- /dev/null
+++ b/new.c
@@ -0,0 +1,2 @@
+int x;
+int y;
`

func TestParseAndApply(t *testing.T) {
	d, err := ParseDiff([]byte(sampleDiff))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(d.CVEs(), ","); got != "CVE-2024-12345,CVE-2023-0001" {
		t.Errorf("CVEs = %s", got)
	}
	if len(d.Files) != 2 || d.Files[0].Path != "src/p.c" || !d.Files[1].New {
		t.Fatalf("files = %+v", d.Files)
	}
	m := d.Files[0].LineMap()
	for old, want := range map[int]int{1: 1, 2: 2, 3: 0, 4: 5, 7: 8, 8: 9, 9: 0, 12: 13} {
		if got := m(old); got != want {
			t.Errorf("line %d maps to %d, want %d", old, got, want)
		}
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "src"), 0o755)
	// Two extra lines at the top: the hunks apply shifted.
	os.WriteFile(filepath.Join(root, "src", "p.c"), []byte("x\ny\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n"), 0o644)
	if err := d.Apply(root); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(root, "src", "p.c"))
	want := "x\ny\none\ntwo\nTHREE\nthree-and-a-half\nfour\nfive\nsix\nseven\neight\nNINE\n"
	if string(got) != want {
		t.Errorf("applied:\n%s\nwant:\n%s", got, want)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "new.c")); string(got) != "int x;\nint y;\n" {
		t.Errorf("new file = %q", got)
	}
}

func TestDiffErrors(t *testing.T) {
	for name, text := range map[string]string{
		"no files":  "just words\n",
		"short":     "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n",
		"binary":    "diff --git a/x b/x\nBinary files a/x and b/x differ\n",
		"no header": "@@ -1 +1 @@\n-a\n+b\n",
	} {
		if _, err := ParseDiff([]byte(text)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	d, err := ParseDiff([]byte("--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"))
	if err == nil {
		if err := d.Apply(t.TempDir()); err == nil {
			t.Errorf("a path leaving the tree was applied")
		}
	}
}

func TestParseArgs(t *testing.T) {
	p := parseArgs([]string{"-O2", "-Iinc", "-I", "inc2", "-c", "-o", "out/a.o", "src/a.c", "-MD", "-MF", "a.d"})
	if !p.compile || p.output != "out/a.o" || len(p.sources) != 1 || p.langs[0] != "c" || p.other {
		t.Errorf("compile: %+v", p)
	}
	p = parseArgs([]string{"-O2", "-o", "prog", "main.c", "b.cc", "x.o", "-lm", "-Wl,--as-needed"})
	if p.compile || len(p.sources) != 2 || p.langs[1] != "c++" || len(p.linkInput) != 1 {
		t.Errorf("compile and link: %+v", p)
	}
	for _, k := range p.keepForC {
		if k == "-lm" || strings.HasPrefix(k, "-Wl,") || k == "prog" {
			t.Errorf("link option %s kept for separate compiles", k)
		}
	}
	if p := parseArgs([]string{"-E", "a.c"}); !p.other {
		t.Errorf("-E not passed through")
	}
	if p := parseArgs([]string{"-flto", "-c", "a.c"}); !p.lto {
		t.Errorf("-flto not seen")
	}
	if p := parseArgs([]string{"-x", "c", "-c", "conftest.txt"}); len(p.sources) != 1 || p.langs[0] != "c" {
		t.Errorf("-x c: %+v", p)
	}
}
