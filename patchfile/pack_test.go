package patchfile

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var gccVariants = [][]string{
	{"-fPIC"},
	{"-fno-pic"},
	{"-fPIC", "-g", "-ffunction-sections", "-fdata-sections"},
	{"-fPIC", "-g", "-gz"},
	{"-fno-pic", "-g3", "-fcf-protection=full"},
}

func TestPackLoadGCC(t *testing.T) {
	for _, flags := range gccVariants {
		t.Run(strings.Join(flags, " "), func(t *testing.T) {
			obj := compile(t, testSource, flags...)
			img := mustPack(t, obj, testMeta())
			spec, err := Load(img)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			checkAgainstDebugELF(t, obj, spec)
			checkPackedLayout(t, obj, img)

			want := testMeta()
			want.Version = FormatVersion
			want.Arch = "amd64"
			if !reflect.DeepEqual(spec.Meta, want) {
				t.Errorf("metadata round trip:\n got %+v\nwant %+v", spec.Meta, want)
			}
			if spec.Machine != elf.EM_X86_64 {
				t.Errorf("Machine = %v", spec.Machine)
			}
			if spec.Signature != nil {
				t.Errorf("fresh image has a signature: %+v", spec.Signature)
			}
			if !bytes.Equal(spec.Raw, img) {
				t.Error("Raw is not the loaded file")
			}
			slot := spec.Raw[spec.SignatureSlot.Off : spec.SignatureSlot.Off+spec.SignatureSlot.Len]
			if len(slot) != SignatureSlotSize || !isZero(slot) {
				t.Errorf("signature slot %v is not %d zero bytes", spec.SignatureSlot, SignatureSlotSize)
			}

			imports := spec.UndefinedSymbols()
			for _, name := range []string{"ext_counter", "printf"} {
				if !contains(imports, name) {
					t.Errorf("imports %v lack %s", imports, name)
				}
			}
			fi, ok := spec.SymbolByName("patched_fn")
			if !ok {
				t.Fatal("patched_fn not found")
			}
			fn := spec.Symbols[fi]
			if fn.Type != elf.STT_FUNC || fn.Bind != elf.STB_GLOBAL || fn.Size == 0 {
				t.Errorf("patched_fn symbol = %+v", fn)
			}
			text := specSection(spec, int(fn.Section))
			if text == nil || text.Flags&elf.SHF_EXECINSTR == 0 {
				t.Fatalf("patched_fn is not in an executable section: %+v", text)
			}
			if _, ok := spec.SymbolByName("ext_counter"); ok {
				t.Error("SymbolByName found an undefined symbol")
			}

			// The code must reference ext_counter, printf's string and the
			// static counter through relocations.
			var sawExt, sawBSS, sawRodata bool
			for _, r := range text.Relocs {
				sym := spec.Symbols[r.Symbol]
				switch {
				case sym.Name == "ext_counter":
					sawExt = true
				case sym.Name == "calls" || isSectionNamed(spec, sym, ".bss"):
					sawBSS = true
				case isSectionNamed(spec, sym, ".rodata") || strings.HasPrefix(sym.Name, ".LC"):
					sawRodata = true
				}
			}
			if !sawExt || !sawBSS || !sawRodata {
				t.Errorf("text relocations miss ext_counter/.bss/.rodata: %v %v %v", sawExt, sawBSS, sawRodata)
			}
			for _, s := range spec.Sections {
				if s.Type == elf.SHT_NOBITS && s.Data != nil {
					t.Errorf("NOBITS section %s has data", s.Name)
				}
				if strings.HasPrefix(s.Name, ".rodata.str") && !bytes.Contains(s.Data, []byte("hello")) {
					t.Errorf("%s lacks the string literal: %q", s.Name, s.Data)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func specSection(spec *Spec, index int) *Section {
	for i := range spec.Sections {
		if spec.Sections[i].Index == index {
			return &spec.Sections[i]
		}
	}
	return nil
}

// isSectionNamed reports whether sym is the section symbol of name or of
// a -fdata-sections variant of it.
func isSectionNamed(spec *Spec, sym Symbol, name string) bool {
	if sym.Type != elf.STT_SECTION {
		return false
	}
	s := specSection(spec, int(sym.Section))
	return s != nil && (s.Name == name || strings.HasPrefix(s.Name, name+"."))
}

// checkAgainstDebugELF compares the Spec with an independent reading of
// the original object.
func checkAgainstDebugELF(t *testing.T, obj []byte, spec *Spec) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	var alloc []*elf.Section
	relocs := map[int]int{}
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 {
			alloc = append(alloc, s)
		}
		if s.Type == elf.SHT_RELA {
			relocs[int(s.Info)] = int(s.Size / relaSize)
		}
	}
	if len(alloc) != len(spec.Sections) {
		t.Fatalf("got %d sections, object has %d allocatable ones", len(spec.Sections), len(alloc))
	}
	for i, s := range spec.Sections {
		want := f.Sections[s.Index]
		if s.Name != want.Name || s.Name != alloc[i].Name || s.Size != want.Size || s.Type != want.Type || s.Flags != want.Flags || s.Align != want.Addralign {
			t.Errorf("section %d: got %s size %d, object has %s size %d", s.Index, s.Name, s.Size, want.Name, want.Size)
		}
		if s.Type != elf.SHT_NOBITS {
			data, _ := want.Data()
			if !bytes.Equal(data, s.Data) {
				t.Errorf("section %s data differs", s.Name)
			}
		}
		if len(s.Relocs) != relocs[s.Index] {
			t.Errorf("section %s has %d relocs, object has %d", s.Name, len(s.Relocs), relocs[s.Index])
		}
		for _, r := range s.Relocs {
			if r.Symbol >= len(spec.Symbols) || r.Offset >= s.Size {
				t.Errorf("bad reloc %+v in %s", r, s.Name)
			}
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Symbols) != len(syms)+1 || spec.Symbols[0] != (Symbol{}) {
		t.Fatalf("symbols: got %d, want %d plus the null symbol", len(spec.Symbols), len(syms))
	}
	for i, s := range syms {
		got := spec.Symbols[i+1]
		if got.Name != s.Name || got.Value != s.Value || got.Size != s.Size || got.Section != s.Section ||
			got.Bind != elf.ST_BIND(s.Info) || got.Type != elf.ST_TYPE(s.Info) {
			t.Errorf("symbol %d: got %+v, want %+v", i+1, got, s)
		}
	}
}

// checkPackedLayout checks that Pack only appended to the object and
// touched nothing but e_shoff and e_shnum.
func checkPackedLayout(t *testing.T, obj, img []byte) {
	t.Helper()
	if len(img) <= len(obj) {
		t.Fatal("packed image is not longer than the object")
	}
	a, b := bytes.Clone(obj), bytes.Clone(img[:len(obj)])
	for _, r := range [][2]int{{40, 48}, {60, 62}} {
		clear(a[r[0]:r[1]])
		clear(b[r[0]:r[1]])
	}
	if !bytes.Equal(a, b) {
		t.Error("Pack changed bytes of the object other than e_shoff/e_shnum")
	}
	if le.Uint64(img[40:])%8 != 0 {
		t.Errorf("section header table at %#x is not 8-aligned", le.Uint64(img[40:]))
	}
	if got, want := le.Uint16(img[62:]), le.Uint16(obj[62:]); got != want {
		t.Errorf("e_shstrndx changed from %d to %d", want, got)
	}
	fo, _ := elf.NewFile(bytes.NewReader(obj))
	fi, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if len(fi.Sections) != len(fo.Sections)+2 {
		t.Fatalf("packed image has %d sections, want %d", len(fi.Sections), len(fo.Sections)+2)
	}
	for i, s := range fo.Sections {
		if fi.Sections[i].Name != s.Name || fi.Sections[i].Link != s.Link || fi.Sections[i].Info != s.Info {
			t.Errorf("section %d changed: %s -> %s", i, s.Name, fi.Sections[i].Name)
		}
	}
	n := len(fo.Sections)
	if fi.Sections[n].Name != MetaSectionName || fi.Sections[n+1].Name != SignatureSectionName {
		t.Errorf("new sections are %s, %s", fi.Sections[n].Name, fi.Sections[n+1].Name)
	}
}

// runTool runs an external tool and requires exit status 0 with no
// warning or error on stderr.
func runTool(t *testing.T, path string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(path), strings.Join(args, " "), err, stderr.String())
	}
	if s := stderr.String(); strings.Contains(strings.ToLower(s), "warning") || strings.Contains(strings.ToLower(s), "error") {
		t.Fatalf("%s %s wrote to stderr:\n%s", filepath.Base(path), strings.Join(args, " "), s)
	}
	return stdout.String()
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBinutilsReadPackedImage(t *testing.T) {
	readelf := needTool(t, "readelf")
	objdump := needTool(t, "objdump")
	for _, flags := range gccVariants {
		t.Run(strings.Join(flags, " "), func(t *testing.T) {
			img := mustPack(t, compile(t, testSource, flags...), testMeta())
			signed, err := WithSignature(img, testSignature())
			if err != nil {
				t.Fatal(err)
			}
			for _, data := range [][]byte{img, signed} {
				p := writeTemp(t, "patch.hp", data)
				out := runTool(t, readelf, "-a", "-W", p)
				for _, want := range []string{MetaSectionName, SignatureSectionName, ".rela.text"} {
					if !strings.Contains(out, want) {
						t.Errorf("readelf -a output lacks %s", want)
					}
				}
				out = runTool(t, objdump, "-dr", p)
				if !strings.Contains(out, "<patched_fn>:") || !strings.Contains(out, "ext_counter") {
					t.Errorf("objdump -dr output lacks patched_fn or its call to ext_counter:\n%s", out)
				}
			}
		})
	}
}

func TestPackSyntheticMachines(t *testing.T) {
	for _, tc := range []struct {
		machine elf.Machine
		arch    string
		rel     uint32
	}{
		{elf.EM_X86_64, "amd64", uint32(elf.R_X86_64_PLT32)},
		{elf.EM_AARCH64, "arm64", uint32(elf.R_AARCH64_CALL26)},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			obj := synthObject(tc.machine, 0)
			img := mustPack(t, obj, testMeta())
			checkPackedLayout(t, obj, img)
			spec, err := Load(img)
			if err != nil {
				t.Fatal(err)
			}
			if spec.Machine != tc.machine || spec.Meta.Arch != tc.arch {
				t.Errorf("machine %v arch %q", spec.Machine, spec.Meta.Arch)
			}
			text := specSection(spec, 1)
			if text == nil || len(text.Relocs) != 1 {
				t.Fatalf(".text = %+v", text)
			}
			r := text.Relocs[0]
			if r.Type != tc.rel || spec.Symbols[r.Symbol].Name != "ext_counter" {
				t.Errorf("reloc = %+v", r)
			}
			if readelf, err := exec.LookPath("readelf"); err == nil {
				runTool(t, readelf, "-a", "-W", writeTemp(t, "p.hp", img))
			}

			wrong := testMeta()
			wrong.Arch = map[string]string{"amd64": "arm64", "arm64": "amd64"}[tc.arch]
			if _, err := Pack(obj, wrong); !errors.Is(err, ErrInvalidMetadata) || !strings.Contains(err.Error(), "arch") {
				t.Errorf("Pack with arch %s: %v", wrong.Arch, err)
			}
		})
	}
}

// TestPackExtendedNumbering packs objects whose section count crosses or
// already exceeds SHN_LORESERVE.
func TestPackExtendedNumbering(t *testing.T) {
	if testing.Short() {
		t.Skip("builds objects with 65280 sections")
	}
	const base = 7 // null, 5 sections, .shstrtab
	for _, extra := range []int{int(elf.SHN_LORESERVE) - base - 2, int(elf.SHN_LORESERVE) - base + 3} {
		obj := synthObject(elf.EM_X86_64, extra)
		img := mustPack(t, obj, testMeta())
		checkPackedLayout(t, obj, img)
		if n := le.Uint16(img[60:]); n != 0 {
			t.Errorf("e_shnum = %d, want 0 for extended numbering", n)
		}
		if _, err := Load(img); err != nil {
			t.Fatal(err)
		}
		if readelf, err := exec.LookPath("readelf"); err == nil {
			runTool(t, readelf, "-S", "-W", writeTemp(t, "p.hp", img))
		}
	}
}

func TestPackRejects(t *testing.T) {
	obj := synthObject(elf.EM_X86_64, 0)
	img := mustPack(t, obj, testMeta())
	if _, err := Pack(img, testMeta()); !errors.Is(err, ErrAlreadyPacked) {
		t.Errorf("Pack(packed) = %v, want ErrAlreadyPacked", err)
	}

	patch := func(off int, b ...byte) []byte {
		c := bytes.Clone(obj)
		copy(c[off:], b)
		return c
	}
	for name, bad := range map[string][]byte{
		"ELF32":       patch(int(elf.EI_CLASS), byte(elf.ELFCLASS32)),
		"big-endian":  patch(int(elf.EI_DATA), byte(elf.ELFDATA2MSB)),
		"ET_EXEC":     patch(16, byte(elf.ET_EXEC), 0),
		"ET_DYN":      patch(16, byte(elf.ET_DYN), 0),
		"EM_386":      patch(18, byte(elf.EM_386), 0),
		"EM_RISCV":    patch(18, byte(elf.EM_RISCV), 0),
		"SHT_REL":     withSectionType(t, obj, ".rela.text", elf.SHT_REL),
		"not ELF":     []byte("#!/bin/sh\necho not an object\n" + strings.Repeat("x", 64)),
		"empty":       nil,
		"short":       obj[:40],
		"no sections": patch(40, 0, 0, 0, 0, 0, 0, 0, 0),
	} {
		_, err := Pack(bad, testMeta())
		if err == nil {
			t.Errorf("%s: Pack succeeded", name)
			continue
		}
		if !errors.Is(err, ErrUnsupportedObject) && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: unclassified error %v", name, err)
		}
		if err.Error() != strings.ToLower(err.Error()[:1])+err.Error()[1:] {
			t.Errorf("%s: error starts with a capital: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}

	metaCases := map[string]func(m *Metadata){
		"empty id":       func(m *Metadata) { m.ID = "" },
		"id with slash":  func(m *Metadata) { m.ID = "a/b" },
		"id too long":    func(m *Metadata) { m.ID = strings.Repeat("a", 65) },
		"dotdot id":      func(m *Metadata) { m.ID = ".." },
		"no build-id":    func(m *Metadata) { m.TargetBuildID = "" },
		"upper build-id": func(m *Metadata) { m.TargetBuildID = "ABCD" },
		"odd build-id":   func(m *Metadata) { m.TargetBuildID = "abc" },
		"no functions":   func(m *Metadata) { m.Functions = nil },
		"empty old":      func(m *Metadata) { m.Functions[0].Old = "" },
		"empty new":      func(m *Metadata) { m.Functions[0].New = "" },
		"zero old size":  func(m *Metadata) { m.Functions[0].OldSize = 0 },
		"bad hash":       func(m *Metadata) { m.Functions[0].OldHash = "md5:abcd" },
		"short hash":     func(m *Metadata) { m.Functions[0].OldHash = "sha256:abcd" },
		"upper hash":     func(m *Metadata) { m.Functions[0].OldHash = strings.ToUpper(testHash) },
		"new undefined":  func(m *Metadata) { m.Functions[0].New = "ext_counter" },
		"new missing":    func(m *Metadata) { m.Functions[0].New = "nope" },
		"new not func":   func(m *Metadata) { m.Functions[0].New = "x.c" },
		"duplicate old":  func(m *Metadata) { m.Functions = append(m.Functions, m.Functions[0]) },
		"bad arch":       func(m *Metadata) { m.Arch = "riscv64" },
		"unencodable":    func(m *Metadata) { m.Builder = map[string]any{"f": func() {}} },
	}
	for name, mutate := range metaCases {
		m := testMeta()
		mutate(&m)
		if _, err := Pack(obj, m); !errors.Is(err, ErrInvalidMetadata) {
			t.Errorf("%s: Pack = %v, want ErrInvalidMetadata", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}

	// Same Old in different files is fine.
	m := testMeta()
	second := m.Functions[0]
	second.OldFile = "other.c"
	m.Functions = append(m.Functions, second)
	if _, err := Pack(obj, m); err != nil {
		t.Errorf("Pack with the same old name in two files: %v", err)
	}
}

func TestPackRejectsGCCDataSymbolAsNew(t *testing.T) {
	obj := compile(t, testSource+"int some_table[4] = {1, 2, 3, 4};\n", "-fPIC")
	m := testMeta()
	m.Functions[0].New = "some_table"
	_, err := Pack(obj, m)
	if !errors.Is(err, ErrInvalidMetadata) || !strings.Contains(err.Error(), "STT_FUNC") {
		t.Errorf("Pack = %v, want a complaint about STT_FUNC", err)
	}
}

func TestPackDoesNotModifyInput(t *testing.T) {
	obj := synthObject(elf.EM_X86_64, 0)
	orig := bytes.Clone(obj)
	mustPack(t, obj, testMeta())
	if !bytes.Equal(obj, orig) {
		t.Error("Pack modified its input")
	}
}

func TestPackMetadataIsCompactJSON(t *testing.T) {
	m := testMeta()
	m.Description = "a <b> & c"
	img := mustPack(t, synthObject(elf.EM_X86_64, 0), m)
	data := sectionData(t, img, MetaSectionName)
	if string(data[:8]) != MetaMagic || le.Uint32(data[8:]) != FormatVersion || int(le.Uint32(data[12:])) != len(data)-MetaHeaderSize {
		t.Fatalf("bad meta header % x", data[:16])
	}
	payload := data[MetaHeaderSize:]
	if !json.Valid(payload) || !bytes.Contains(payload, []byte("a <b> & c")) {
		t.Errorf("payload = %s", payload)
	}
}

func TestLoadFile(t *testing.T) {
	img := mustPack(t, synthObject(elf.EM_AARCH64, 0), testMeta())
	p := writeTemp(t, "patch.hp", img)
	spec, err := LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Meta.ID != testMeta().ID {
		t.Errorf("ID = %q", spec.Meta.ID)
	}
	if _, err := LoadFile(p + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadFile(missing) = %v", err)
	}
	bad := writeTemp(t, "bad.hp", img[:100])
	if _, err := LoadFile(bad); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadFile(truncated) = %v", err)
	}
}

// withSectionType returns a copy of img with the type of section name
// changed.
func withSectionType(t *testing.T, img []byte, name string, typ elf.SectionType) []byte {
	t.Helper()
	c := bytes.Clone(img)
	le.PutUint32(sectionHeaderAt(t, c, name)[4:], uint32(typ))
	return c
}
