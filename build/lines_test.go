package build

import (
	"os"
	"path/filepath"
	"testing"
)

// Line maps and changed lines follow where the hunks applied, not only
// where their headers say (the tree has two more lines at the top).
func TestLinesAfterShiftedApply(t *testing.T) {
	d, err := ParseDiff([]byte(sampleDiff))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "src"), 0o755)
	os.WriteFile(filepath.Join(root, "src", "p.c"), []byte("x\ny\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n"), 0o644)
	if err := d.Apply(root); err != nil {
		t.Fatal(err)
	}
	f := d.Files[0]
	m := f.LineMap()
	for old, want := range map[int]int{1: 1, 3: 3, 4: 4, 5: 0, 6: 7, 10: 11, 11: 0} {
		if got := m(old); got != want {
			t.Errorf("line %d maps to %d, want %d", old, got, want)
		}
	}
	removed, added := f.ChangedLines()
	if len(removed) != 2 || !removed[5] || !removed[11] || len(added) != 3 || !added[5] || !added[6] || !added[12] {
		t.Errorf("removed %v, added %v", removed, added)
	}
}

// diff -N marks a file one side lacks by the epoch as its time stamp (in
// the local time zone), where git writes /dev/null.
func TestDiffNewAndDeletedByEpoch(t *testing.T) {
	text := "diff -ruN a/gone.c b/gone.c\n" +
		"--- a/gone.c\t2026-11-21 11:35:36.066453566 -0500\n" +
		"+++ b/gone.c\t1969-12-31 19:00:00.000000000 -0500\n" +
		"@@ -1 +0,0 @@\n-int x;\n" +
		"diff -ruN a/new.c b/new.c\n" +
		"--- a/new.c\t1970-01-01 00:00:00.000000000 +0000\n" +
		"+++ b/new.c\t2026-11-21 16:35:36.066453566 +0000\n" +
		"@@ -0,0 +1,2 @@\n+int y;\n+int z;\n"
	d, err := ParseDiff([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Files) != 2 || !d.Files[0].Deleted || d.Files[0].Path != "gone.c" || !d.Files[1].New || d.Files[1].Path != "new.c" {
		t.Fatalf("files: %+v %+v", d.Files[0], d.Files[1])
	}
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "gone.c"), []byte("int x;\n"), 0o644)
	if err := d.Apply(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "gone.c")); !os.IsNotExist(err) {
		t.Errorf("gone.c not deleted: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "new.c")); string(got) != "int y;\nint z;\n" {
		t.Errorf("new.c = %q", got)
	}
}

// The scratch copy must not write into the user's tree or elsewhere
// through symbolic links: a link into the tree leads into the copy, and
// the diff is not applied through a link that leaves it.
func TestCopyTreeSymlinks(t *testing.T) {
	base := t.TempDir()
	src, dst, outside := filepath.Join(base, "src"), filepath.Join(base, "work", "copy"), filepath.Join(base, "outside")
	os.MkdirAll(filepath.Join(src, "real"), 0o755)
	os.MkdirAll(outside, 0o755)
	os.WriteFile(filepath.Join(src, "real", "x.h"), []byte("int x;\n"), 0o644)
	os.WriteFile(filepath.Join(outside, "y.h"), []byte("int y;\n"), 0o644)
	os.Symlink(filepath.Join(src, "real"), filepath.Join(src, "abs"))
	os.Symlink("../outside", filepath.Join(src, "out"))
	if err := copyTree(src, dst); err != nil {
		t.Fatal(err)
	}
	if got, err := filepath.EvalSymlinks(filepath.Join(dst, "abs")); err != nil || got != filepath.Join(dst, "real") {
		t.Errorf("link into the tree leads to %q (%v), want the copy's", got, err)
	}
	if got, err := filepath.EvalSymlinks(filepath.Join(dst, "out")); err != nil || got != outside {
		t.Errorf("relative link out of the tree leads to %q (%v), want %q", got, err, outside)
	}
	for _, p := range []string{"abs/x.h", "out/y.h"} {
		d, err := ParseDiff([]byte("--- a/" + p + "\n+++ b/" + p + "\n@@ -1 +1 @@\n-int " + p[len(p)-3:len(p)-2] + ";\n+int z;\n"))
		if err != nil {
			t.Fatal(err)
		}
		d.Apply(dst)
	}
	if got, _ := os.ReadFile(filepath.Join(src, "real", "x.h")); string(got) != "int x;\n" {
		t.Errorf("the user's tree was written: %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(outside, "y.h")); string(got) != "int y;\n" {
		t.Errorf("a file outside the tree was written: %q", got)
	}
}
