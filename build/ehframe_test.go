package build

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/patchfile"
)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

func runTool(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var readelfEntry = regexp.MustCompile(`^([0-9a-f]+) ([0-9a-f]+) ([0-9a-f]+) (CIE|FDE)(?: cie=([0-9a-f]+) pc=([0-9a-f]+)\.\.([0-9a-f]+))?`)

// readelfFrames lists the entries readelf finds in an object's .eh_frame:
// "CIE@off aug" and "FDE@off cie=off range=n"; warnings fail the test.
func readelfFrames(t *testing.T, path string) []string {
	t.Helper()
	out, err := exec.Command("readelf", "--debug-dump=frames", path).CombinedOutput()
	if err != nil {
		t.Fatalf("readelf: %v\n%s", err, out)
	}
	if bytes.Contains(bytes.ToLower(out), []byte("warning")) {
		t.Fatalf("readelf warns about %s:\n%s", path, out)
	}
	var list []string
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		m := readelfEntry.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		off, _ := strconv.ParseUint(m[1], 16, 64)
		if m[4] == "CIE" {
			aug := ""
			for _, next := range lines[i+1:] {
				if v, ok := strings.CutPrefix(strings.TrimSpace(next), "Augmentation:"); ok {
					aug = strings.Trim(strings.TrimSpace(v), `"`)
					break
				}
			}
			list = append(list, fmt.Sprintf("CIE@%#x %s", off, aug))
			continue
		}
		cie, _ := strconv.ParseUint(m[5], 16, 64)
		lo, _ := strconv.ParseUint(m[6], 16, 64)
		hi, _ := strconv.ParseUint(m[7], 16, 64)
		list = append(list, fmt.Sprintf("FDE@%#x cie=%#x range=%#x", off, cie, hi-lo))
	}
	return list
}

func describeEntries(entries []ehEntry) []string {
	var list []string
	for _, e := range entries {
		if e.cie {
			list = append(list, fmt.Sprintf("CIE@%#x %s", e.off, e.aug))
		} else {
			list = append(list, fmt.Sprintf("FDE@%#x cie=%#x range=%#x", e.off, e.cieOff, e.pcRange))
		}
	}
	return list
}

const ehSource = `#include <cstdio>
#include <stdexcept>

struct Guard {
	~Guard();
};
Guard::~Guard() { std::puts("guard"); }

__attribute__((noinline)) void check(int x)
{
	if (x < 0)
		throw std::invalid_argument("negative");
}

int unchanged(int x)
{
	try {
		check(x);
	} catch (const std::exception &) {
		return -1;
	}
	return x;
}
`

// TestParseEHFrame compares the parser with readelf on C++ and C objects,
// with and without position-independent code.
func TestParseEHFrame(t *testing.T) {
	needTools(t, "g++", "gcc", "readelf")
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.cc": ehSource, "c.c": "int f(int x) { return x * 3; }\nint g(int x) { return f(x) + 1; }\n"})
	for _, c := range []struct{ cc, src string }{{"g++", "a.cc"}, {"gcc", "c.c"}} {
		for _, pic := range []string{"-fPIC", "-fno-pie"} {
			obj := filepath.Join(dir, c.src+pic+".o")
			runTool(t, dir, c.cc, "-O2", pic, "-ffunction-sections", "-fdata-sections", "-c", "-o", obj, c.src)
			o, err := loadObject(obj, machineAMD64)
			if err != nil {
				t.Fatal(err)
			}
			var eh *section
			for _, s := range o.secs {
				if s != nil && s.name == ".eh_frame" {
					eh = s
				}
			}
			if eh == nil {
				t.Fatalf("%s: no .eh_frame", obj)
			}
			entries, err := parseEHFrame(eh.data)
			if err != nil {
				t.Fatal(err)
			}
			got, want := describeEntries(entries), readelfFrames(t, obj)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("%s:\nparsed:\n%s\nreadelf:\n%s", obj, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			// Each FDE is placed by a relocation at pc_begin; each LSDA
			// pointer and personality pointer has one too.
			relocAt := map[uint64]bool{}
			for _, r := range eh.relocs {
				relocAt[r.off] = true
			}
			cies, lsdas := map[uint64]*ehEntry{}, 0
			for i, e := range entries {
				if e.cie {
					cies[e.off] = &entries[i]
					if e.persOff >= 0 && !relocAt[uint64(e.persOff)] {
						t.Errorf("%s: CIE@%#x: no relocation at the personality pointer %#x", obj, e.off, e.persOff)
					}
					continue
				}
				if !relocAt[e.pcBegin] || e.pcBegin != e.off+8 || e.pcSize != 4 {
					t.Errorf("%s: FDE@%#x: pc_begin at %#x (%d bytes) has no relocation", obj, e.off, e.pcBegin, e.pcSize)
				}
				if e.lsdaOff >= 0 {
					lsdas++
					if !relocAt[uint64(e.lsdaOff)] {
						t.Errorf("%s: FDE@%#x: no relocation at the LSDA pointer %#x", obj, e.off, e.lsdaOff)
					}
				}
			}
			if c.cc == "g++" && lsdas == 0 {
				t.Errorf("%s: no FDE with an LSDA found", obj)
			}
		}
	}
}

func TestParseEHFrameMalformed(t *testing.T) {
	le := binary.LittleEndian
	entry := func(id uint32, body ...byte) []byte {
		b := make([]byte, 8, 8+len(body))
		le.PutUint32(b, uint32(4+len(body)))
		le.PutUint32(b[4:], id)
		return append(b, body...)
	}
	// version 1, "zR", code 1, data -8, RA 16, aug length 1, sdata4|pcrel
	cieZR := entry(0, 1, 'z', 'R', 0, 1, 0x78, 16, 1, 0x1b, 0, 0, 0)
	fde := func(back uint32) []byte { return entry(back, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0) }
	good := append(append([]byte{}, cieZR...), fde(uint32(len(cieZR)+4))...)
	entries, err := parseEHFrame(good)
	if err != nil || len(entries) != 2 || entries[1].pcRange != 0x10 || entries[1].pcBegin != uint64(len(cieZR)+8) {
		t.Fatalf("good table: %v %+v", err, entries)
	}
	// A zero terminator ends the table.
	if entries, err := parseEHFrame(append(append([]byte{}, good...), 0, 0, 0, 0, 0xff)); err != nil || len(entries) != 2 {
		t.Errorf("terminated table: %v %+v", err, entries)
	}
	cases := map[string]struct {
		data []byte
		want error
	}{
		"truncated length": {good[:len(good)-3], errEHFrame},
		"entry past end":   {append(append([]byte{}, cieZR...), entry(uint32(len(cieZR)+4), 0, 0)[:10]...), errEHFrame},
		"no CIE there":     {append(append([]byte{}, cieZR...), fde(uint32(len(cieZR)))...), errEHFrame},
		"CIE before start": {fde(64), errEHFrame},
		"64-bit length":    {[]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, ErrUnsupported},
		"aligned personality": {
			entry(0, 1, 'z', 'P', 0, 1, 0x78, 16, 9, 0x50, 0, 0, 0, 0, 0, 0, 0, 0), ErrUnsupported},
		"augmentation without z": {entry(0, 1, 'e', 'h', 0, 1, 0x78, 16), ErrUnsupported},
		"bad version":            {entry(0, 2, 0, 1, 0x78, 16), ErrUnsupported},
		"short augmentation":     {entry(0, 1, 'z', 'P', 0, 1, 0x78, 16, 1, 0x00, 0, 0, 0, 0, 0, 0, 0, 0), errEHFrame},
		"fde too short":          {append(append([]byte{}, cieZR...), entry(uint32(len(cieZR)+4), 0, 0)...), errEHFrame},
	}
	for name, c := range cases {
		if _, err := parseEHFrame(c.data); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
}

// specFromELF reads a relocatable object the way the engine sees a patch.
func specFromELF(t *testing.T, data []byte) *patchfile.Spec {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	spec := &patchfile.Spec{Machine: f.Machine}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	spec.Symbols = append(spec.Symbols, patchfile.Symbol{})
	for _, s := range syms {
		spec.Symbols = append(spec.Symbols, patchfile.Symbol{Name: s.Name, Value: s.Value, Size: s.Size,
			Bind: elf.ST_BIND(s.Info), Type: elf.ST_TYPE(s.Info), Section: s.Section})
	}
	relocs := map[int][]patchfile.Reloc{}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA {
			continue
		}
		rd, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+24 <= len(rd); off += 24 {
			info := binary.LittleEndian.Uint64(rd[off+8:])
			relocs[int(s.Info)] = append(relocs[int(s.Info)], patchfile.Reloc{Offset: binary.LittleEndian.Uint64(rd[off:]),
				Type: uint32(info), Symbol: int(info >> 32), Addend: int64(binary.LittleEndian.Uint64(rd[off+16:]))})
		}
	}
	for i, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		sec := patchfile.Section{Index: i, Name: s.Name, Type: s.Type, Flags: s.Flags, Align: s.Addralign, Size: s.Size, Relocs: relocs[i]}
		if s.Type != elf.SHT_NOBITS {
			if sec.Data, err = s.Data(); err != nil {
				t.Fatal(err)
			}
		}
		spec.Sections = append(spec.Sections, sec)
	}
	return spec
}

// TestPatchUnwindTables runs the emitter on a C++ fix: the changed
// function now catches an exception and calls a new static function with
// a cleanup. Only their FDEs (and their cold parts') may be in the patch,
// with their LSDAs, one copy of each CIE, the personality routine and the
// caught type through the patch's own DW.ref cells.
func TestPatchUnwindTables(t *testing.T) {
	needTools(t, "g++", "readelf")
	dir := t.TempDir()
	orig := ehSource + `
int changed(int x)
{
	check(x);
	return x + 1;
}
`
	patched := ehSource + `
static __attribute__((noinline)) int helper(int x)
{
	Guard g;
	check(x);
	return x * 3;
}

int changed(int x)
{
	try {
		return helper(x);
	} catch (const std::invalid_argument &e) {
		std::printf("caught %s\n", e.what());
		return -2;
	}
}
`
	writeFiles(t, dir, map[string]string{"orig.cc": orig, "patched.cc": patched,
		"main.cc": "int unchanged(int);\nint changed(int);\nint main(int argc, char **) { return unchanged(argc) + changed(argc); }\n"})
	flags := []string{"-O2", "-g", "-ffunction-sections", "-fdata-sections", "-c"}
	runTool(t, dir, "g++", append(flags, "-o", "orig.o", "orig.cc")...)
	runTool(t, dir, "g++", append(flags, "-o", "patched.o", "patched.cc")...)
	runTool(t, dir, "g++", "-O2", "-c", "-o", "main.o", "main.cc")
	runTool(t, dir, "g++", "-Wl,--build-id", "-o", "prog", "orig.o", "main.o")

	tgt, err := openTarget(filepath.Join(dir, "prog"))
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.close()
	oo, err := loadObject(filepath.Join(dir, "orig.o"), machineAMD64)
	if err != nil {
		t.Fatal(err)
	}
	po, err := loadObject(filepath.Join(dir, "patched.o"), machineAMD64)
	if err != nil {
		t.Fatal(err)
	}
	b := &builder{tgt: tgt}
	u := newUnit("x.cc", oo, po)
	u.compare()
	reps, observed, err := b.replacements(u)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		r.newName = r.tsym.Name + ".hotpatch"
	}
	e := newEmitter(b, []*unit{u}, reps, observed)
	if err := e.run(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "patch.o")
	if err := os.WriteFile(out, e.out.bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	frames := readelfFrames(t, out) // no warnings
	spec := specFromELF(t, e.out.bytes())
	fdes, err := PatchFDEs(spec)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]FDEInfo{}
	for _, f := range fdes {
		t.Logf("%+v", f)
		if f.Function == "" || f.Range != f.FuncSize {
			t.Errorf("FDE does not cover exactly one function of the patch: %+v", f)
		}
		if f.Personality != "" && f.Personality != "__gxx_personality_v0" {
			t.Errorf("personality %q", f.Personality)
		}
		if !isCold(f.Function) {
			got[f.Function] = f
		}
	}
	if len(got) != 2 || got["_Z7changedi.hotpatch"].LSDA == "" || got["_Z7changedi.hotpatch"].Personality == "" || got["_ZL6helperi"].Function == "" {
		t.Errorf("want FDEs of _Z7changedi.hotpatch (with an LSDA) and _ZL6helperi (and cold parts), got %+v", fdes)
	}
	// Each distinct CIE once.
	cies := 0
	for _, f := range frames {
		if strings.HasPrefix(f, "CIE") {
			cies++
		}
	}
	if cies == 0 || cies > 2 {
		t.Errorf("want one CIE with a personality routine and at most one without, got %v", frames)
	}
	if len(frames)-cies != len(fdes) {
		t.Errorf("readelf sees %v, the walker %d FDEs", frames, len(fdes))
	}
	// The catch clause's type reaches std::invalid_argument's type_info,
	// through a DW.ref cell of the patch or directly.
	names := func(i int) string { return spec.Symbols[i].Name }
	found := false
	for _, s := range spec.Sections {
		if !strings.HasPrefix(s.Name, ".gcc_except_table") {
			continue
		}
		for _, r := range s.Relocs {
			n := names(r.Symbol)
			if n == "DW.ref._ZTISt16invalid_argument" {
				for _, c := range spec.Sections {
					if c.Index == int(spec.Symbols[r.Symbol].Section) && len(c.Relocs) == 1 && elf.R_X86_64(c.Relocs[0].Type) == elf.R_X86_64_64 {
						n = names(c.Relocs[0].Symbol)
					}
				}
			}
			found = found || n == "_ZTISt16invalid_argument"
		}
	}
	if !found {
		t.Errorf("the LSDA does not refer to _ZTISt16invalid_argument")
	}
	// One cell per name, and none is reported as new data.
	cells := map[string]int{}
	for _, s := range spec.Symbols {
		if strings.HasPrefix(s.Name, "DW.ref.") {
			cells[s.Name]++
		}
	}
	for n, c := range cells {
		if c != 1 {
			t.Errorf("%d copies of %s", c, n)
		}
	}
	if len(e.newData) != 0 {
		t.Errorf("DW.ref cells reported as new data: %v", e.newData)
	}
}

// TestChangedCatchClause: a fix that only changes the type a catch clause
// names leaves the code as it was; the function changes through its LSDA.
func TestChangedCatchClause(t *testing.T) {
	needTools(t, "g++")
	dir := t.TempDir()
	src := `#include <stdexcept>
void check(int x);
int f(int x)
{
	try {
		check(x);
	} catch (const std::invalid_argument &) {
		return -1;
	}
	return x;
}
int g(int x)
{
	try {
		check(x);
	} catch (const std::exception &) {
		return -1;
	}
	return x;
}
`
	writeFiles(t, dir, map[string]string{"orig.cc": src, "patched.cc": strings.Replace(src, "invalid_argument", "domain_error", 1)})
	for _, v := range []string{"orig", "patched"} {
		runTool(t, dir, "g++", "-O2", "-ffunction-sections", "-fdata-sections", "-c", "-o", v+".o", v+".cc")
	}
	oo, err := loadObject(filepath.Join(dir, "orig.o"), machineAMD64)
	if err != nil {
		t.Fatal(err)
	}
	po, err := loadObject(filepath.Join(dir, "patched.o"), machineAMD64)
	if err != nil {
		t.Fatal(err)
	}
	u := newUnit("x.cc", oo, po)
	u.compare()
	var changed []string
	for _, p := range u.changed {
		changed = append(changed, p.name)
	}
	if strings.Join(changed, " ") != "_Z1fi" {
		t.Errorf("changed = %v, want _Z1fi only", changed)
	}
	if !u.sectionEqual(po.byName["_Z1fi"].sec, oo.byName["_Z1fi"].sec) {
		t.Logf("the code of _Z1fi differs too; the test no longer isolates the LSDA")
	}
}
