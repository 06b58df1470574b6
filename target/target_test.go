package target

import (
	"errors"
	"os/exec"
	"path/filepath"
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
