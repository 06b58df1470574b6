package target

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestPLTEntries: the PLT entry found for each imported function is the
// one binutils names name@plt, for x86-64 and aarch64 code, with and
// without a separate .plt.sec (IBT) or BTI landing pads.
func TestPLTEntries(t *testing.T) {
	src := `#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) { char b[64]; memcpy(b, argv[0], 8); b[8] = 0; puts(b); return (int)strlen(b) + argc; }
`
	cases := []struct {
		cc, objdump string
		flags       []string
	}{
		{"gcc", "objdump", nil},
		{"gcc", "objdump", []string{"-fcf-protection=full", "-Wl,-z,ibtplt"}},
		{"aarch64-linux-gnu-gcc", "aarch64-linux-gnu-objdump", nil},
		{"aarch64-linux-gnu-gcc", "aarch64-linux-gnu-objdump", []string{"-mbranch-protection=standard", "-Wl,-z,force-bti"}},
	}
	entryRE := regexp.MustCompile(`(?m)^([0-9a-f]+) <(\w+)@plt>:`)
	for _, c := range cases {
		if _, err := exec.LookPath(c.cc); err != nil {
			t.Logf("%s not installed: skipping that case", c.cc)
			continue
		}
		dir := t.TempDir()
		write(t, filepath.Join(dir, "p.c"), src)
		bin := filepath.Join(dir, "p")
		args := append([]string{"-O1", "-fno-builtin", "-o", bin, filepath.Join(dir, "p.c")}, c.flags...)
		if out, err := exec.Command(c.cc, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", c.cc, args, err, out)
		}
		dump, err := exec.Command(c.objdump, "-d", "-j", ".plt", "-j", ".plt.sec", bin).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", c.objdump, err, dump)
		}
		syms, err := LoadSymbols(bin, bin)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, m := range entryRE.FindAllStringSubmatch(string(dump), -1) {
			want, _ := strconv.ParseUint(m[1], 16, 64)
			got, ok := syms.PLTEntry(m[2], "")
			if !ok || got != want {
				t.Errorf("%s %v: %s@plt at %#x, found %#x (%v)", c.cc, c.flags, m[2], want, got, ok)
			}
			if _, _, ok := syms.BoundSlot(m[2], ""); !ok {
				t.Errorf("%s %v: %s has no slot", c.cc, c.flags, m[2])
			}
			found++
		}
		if found < 3 {
			t.Errorf("%s %v: objdump shows %d PLT entries, want puts, strlen and memcpy:\n%s", c.cc, c.flags, found, dump)
		}
		if e, _ := syms.PLTEntry("puts", ""); !syms.InPLT(e) || syms.InPLT(0) {
			t.Errorf("%s %v: PLT ranges %x", c.cc, c.flags, syms.plt)
		}
	}
}

// TestSlotVersions: an object referencing two versions of one name keeps
// both slots, and each lookup takes the slot asking for its version.
func TestSlotVersions(t *testing.T) {
	s := &Symbols{
		slots: map[string][]slotRef{"memcpy": {
			{slot: 0x100, lazy: true}, // memcpy@GLIBC_2.2.5
			{slot: 0x108, lazy: true}, // memcpy@GLIBC_2.14
		}},
		slotVersion: map[uint64]string{0x100: "GLIBC_2.2.5", 0x108: "GLIBC_2.14"},
		pltBySlot:   map[uint64]uint64{0x100: 0x2000, 0x108: 0x2010},
	}
	for version, want := range map[string]uint64{"GLIBC_2.2.5": 0x100, "GLIBC_2.14": 0x108} {
		if slot, lazy, ok := s.BoundSlot("memcpy", version); !ok || !lazy || slot != want {
			t.Errorf("BoundSlot(memcpy, %s) = %#x, %v, %v; want %#x", version, slot, lazy, ok, want)
		}
		if entry, ok := s.PLTEntry("memcpy", version); !ok || entry != s.pltBySlot[want] {
			t.Errorf("PLTEntry(memcpy, %s) = %#x, %v", version, entry, ok)
		}
	}
	if _, _, ok := s.BoundSlot("memcpy", "GLIBC_2.99"); ok {
		t.Error("a slot of another version matched")
	}
	// A GLOB_DAT slot, bound at load, is preferred over a lazy one.
	s.slots["memcpy"] = append(s.slots["memcpy"], slotRef{slot: 0x200})
	s.slotVersion[0x200] = "GLIBC_2.14"
	if slot, lazy, _ := s.BoundSlot("memcpy", "GLIBC_2.14"); slot != 0x200 || lazy {
		t.Errorf("GLOB_DAT slot not preferred: %#x, lazy %v", slot, lazy)
	}
}
