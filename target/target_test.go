package target

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMaps(t *testing.T) {
	data := []byte(`55d0c0a00000-55d0c0a01000 r--p 00000000 fe:00 123                        /usr/bin/with space
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:00 123                        /usr/bin/with space
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]
7f0000000000-7f0000001000 r--p 00000000 00:00 0                          [anon:hotpatch:fix-1]
7f0000001000-7f0000002000 rw-p 00000000 00:00 0 
`)
	maps, err := ParseMaps(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 5 {
		t.Fatalf("got %d mappings", len(maps))
	}
	if maps[0].Path != "/usr/bin/with space" || maps[1].Offset != 0x1000 || !maps[1].Exec() || maps[0].Exec() {
		t.Errorf("first mappings parsed as %+v %+v", maps[0], maps[1])
	}
	if maps[3].AnonName() != "hotpatch:fix-1" || maps[2].AnonName() != "" || maps[4].Path != "" {
		t.Errorf("names: %q %q %q", maps[3].AnonName(), maps[2].AnonName(), maps[4].Path)
	}
	for _, bad := range []string{"xyz\n", "1000-zz r--p 0 00:00 0\n", "1000 r--p 0 00:00 0\n"} {
		if _, err := ParseMaps([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestHoles(t *testing.T) {
	maps := []Mapping{{Start: 0x1000, End: 0x2000}, {Start: 0x5000, End: 0x6000}}
	got := Holes(maps, 0, 0x8000)
	want := [][2]uint64{{0, 0x1000}, {0x2000, 0x5000}, {0x6000, 0x8000}}
	if len(got) != len(want) {
		t.Fatalf("holes %x", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("hole %d = %x, want %x", i, got[i], want[i])
		}
	}
	if h := Holes(maps, 0x1800, 0x5800); len(h) != 1 || h[0] != [2]uint64{0x2000, 0x5000} {
		t.Errorf("clipped holes %x", h)
	}
}

// TestSymbols checks lookup of static symbols by file, and the room a jump
// may use before the next symbol.
func TestSymbols(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	dir := t.TempDir()
	a, b, bin := filepath.Join(dir, "a.c"), filepath.Join(dir, "b.c"), filepath.Join(dir, "prog")
	write(t, a, "static __attribute__((noipa)) int check(int x) { return x + 1; }\nint fa(int x) { return check(x); }\n")
	write(t, b, "static __attribute__((noipa)) int check(int x) { return x * 3 + 7; }\nint fb(int x) { return check(x); }\nint main(void) { return fa(1) + fb(2); }\n")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, a, b).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	syms, err := LoadSymbols(bin, bin)
	if err != nil {
		t.Fatal(err)
	}
	_, err = syms.Lookup("check", "")
	var se *SymbolError
	if !errors.Is(err, ErrAmbiguousSymbol) || !errors.As(err, &se) || len(se.Candidates) != 2 {
		t.Fatalf("ambiguous lookup: %v", err)
	}
	ca, err := syms.Lookup("check", "a.c")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := syms.Lookup("check", "b.c")
	if err != nil || ca.Value == cb.Value {
		t.Fatalf("check@b.c = %+v, %v", cb, err)
	}
	if _, err := syms.Lookup("nothing", ""); !errors.Is(err, ErrSymbolNotFound) {
		t.Errorf("missing symbol: %v", err)
	}
	if room := syms.Room(ca); room < ca.Size {
		t.Errorf("room %d smaller than the function (%d)", room, ca.Size)
	}
	id, err := BuildIDOfFile(bin)
	if err != nil || len(id) < 16 {
		t.Errorf("build-id %q, %v", id, err)
	}
	code, err := ReadFunction(bin, cb)
	if err != nil || uint64(len(code)) != cb.Size {
		t.Errorf("read function: %d bytes, %v", len(code), err)
	}
}

// A shared library's .symtab names each versioned definition NAME@@VER
// (default) or NAME@VER (older, hidden). A reference by plain name binds to
// the default version, as the dynamic linker binds a new reference.
func TestLookupDefaultVersion(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	dir := t.TempDir()
	src, vmap, lib := filepath.Join(dir, "v.c"), filepath.Join(dir, "v.map"), filepath.Join(dir, "libv.so")
	var c, v1, v2 strings.Builder
	const n = 30
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&c, "int n%d(void) { return %d; }\nint o%d(void) { return -%d; }\n", i, i, i, i)
		fmt.Fprintf(&c, "__asm__(\".symver n%d, f%d@@V2\");\n__asm__(\".symver o%d, f%d@V1\");\n", i, i, i, i)
		fmt.Fprintf(&v1, "f%d; ", i)
		fmt.Fprintf(&v2, "f%d; ", i)
	}
	write(t, src, c.String())
	write(t, vmap, "V1 { global: "+v1.String()+"local: *; };\nV2 { global: "+v2.String()+"} V1;\n")
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-o", lib, src, "-Wl,--version-script="+vmap).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	syms, err := LoadSymbols(lib, lib)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("f%d", i)
		want, ok := syms.LookupDynamic(name)
		if !ok {
			t.Fatalf("%s not exported", name)
		}
		got, err := syms.Lookup(name, "")
		if err != nil || got.Value != want.Value {
			t.Errorf("%s binds to %s at %#x (%v), want the default version at %#x", name, got.Name, got.Value, err, want.Value)
		}
	}
}

// With only .dynsym, static functions are invisible: the bytes after an
// exported function may be one of them, so a jump may use only the
// function's own bytes.
func TestRoomWithoutStaticSymbols(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	if _, err := exec.LookPath("strip"); err != nil {
		t.Skip("needs strip")
	}
	dir := t.TempDir()
	src, bin, stripped := filepath.Join(dir, "r.c"), filepath.Join(dir, "r"), filepath.Join(dir, "r.stripped")
	write(t, src, `__attribute__((noinline)) int tiny(int x) { return x; }
static __attribute__((noinline)) int helper(int x) { return x * 3 + 1; }
int main(int c, char **v) { return tiny(c) + helper(c); }
`)
	if out, err := exec.Command("gcc", "-Os", "-fno-toplevel-reorder", "-fno-reorder-functions", "-fno-align-functions",
		"-rdynamic", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	if out, err := exec.Command("strip", "-o", stripped, bin).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v\n%s", err, out)
	}
	full, err := LoadSymbols(bin, bin)
	if err != nil {
		t.Fatal(err)
	}
	tiny, err := full.Lookup("tiny", "")
	if err != nil {
		t.Fatal(err)
	}
	helper, err := full.Lookup("helper", "")
	if err != nil {
		t.Fatal(err)
	}
	if helper.Value <= tiny.Value {
		t.Skipf("gcc placed helper at %#x before tiny at %#x", helper.Value, tiny.Value)
	}
	dyn, err := LoadSymbols(stripped, stripped)
	if err != nil {
		t.Fatal(err)
	}
	if dyn.Source != ".dynsym" {
		t.Skipf("symbols come from %s", dyn.Source)
	}
	sym, err := dyn.Lookup("tiny", "")
	if err != nil {
		t.Fatal(err)
	}
	if room := dyn.Room(sym); sym.Value+room > helper.Value {
		t.Errorf("room %d from %#x reaches into the static helper at %#x", room, sym.Value, helper.Value)
	}
}

// g++ exports template static data as STB_GNU_UNIQUE; the dynamic linker
// binds new references to it like to any global.
func TestLookupDynamicUnique(t *testing.T) {
	if _, err := exec.LookPath("g++"); err != nil {
		t.Skip("needs g++")
	}
	dir := t.TempDir()
	src, lib := filepath.Join(dir, "u.cc"), filepath.Join(dir, "libu.so")
	write(t, src, "template<class T> struct S { static int v; };\ntemplate<class T> int S<T>::v = 5;\nint use() { return S<int>::v++; }\n")
	if out, err := exec.Command("g++", "-shared", "-fPIC", "-O2", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("g++: %v\n%s", err, out)
	}
	syms, err := LoadSymbols(lib, lib)
	if err != nil {
		t.Fatal(err)
	}
	want, err := syms.Lookup("_ZN1SIiE1vE", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := syms.LookupDynamic("_ZN1SIiE1vE"); !ok || got.Value != want.Value {
		t.Errorf("unique symbol: %+v %v, want value %#x", got, ok, want.Value)
	}
}
