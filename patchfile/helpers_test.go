package patchfile

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testSource calls an external function, keeps a static variable and uses
// a string literal, so the object has undefined symbols, .bss and .rodata.
const testSource = `
#include <stdio.h>
extern int ext_counter(int);
static int calls;
int patched_fn(int x) {
	calls++;
	printf("patched %d %s\n", x, "hello");
	return ext_counter(x) + calls;
}
int helper_fn(int y) { return patched_fn(y) * 3; }
`

const testHash = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func testMeta() Metadata {
	return Metadata{
		ID:            "test-patch_1.0",
		Sequence:      7,
		TargetBuildID: "3f1a9c0b7e2d44d8a1b6c9e0f2a3b4c5d6e7f809",
		TargetPath:    "/usr/bin/target",
		Description:   "fix the counter",
		CVEs:          []string{"CVE-2024-0001"},
		Builder:       map[string]any{"compiler": "gcc"},
		Functions: []Function{{
			Old:     "patched_fn",
			OldFile: "target.c",
			OldAddr: 0x401136,
			OldSize: 48,
			OldHash: testHash,
			New:     "patched_fn",
		}},
	}
}

// needTool skips the test when an external tool is not installed.
func needTool(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		tb.Skipf("%s not found in PATH; install it to run this test", name)
	}
	return path
}

func lookGCC() (string, error) { return exec.LookPath("gcc") }

// compile builds testSource (or src) into an object with gcc.
func compile(tb testing.TB, src string, flags ...string) []byte {
	tb.Helper()
	gcc := needTool(tb, "gcc")
	dir := tb.TempDir()
	c := filepath.Join(dir, "patch.c")
	o := filepath.Join(dir, "patch.o")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
	args := append([]string{"-c", "-O2"}, flags...)
	args = append(args, "-o", o, c)
	cmd := exec.Command(gcc, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	obj, err := os.ReadFile(o)
	if err != nil {
		tb.Fatal(err)
	}
	return obj
}

func mustPack(tb testing.TB, obj []byte, meta Metadata) []byte {
	tb.Helper()
	img, err := Pack(obj, meta)
	if err != nil {
		tb.Fatalf("Pack: %v", err)
	}
	return img
}

// synthSection describes one section of a hand-built object.
type synthSection struct {
	name    string
	typ     elf.SectionType
	flags   elf.SectionFlag
	link    uint32
	info    uint32
	align   uint64
	entsize uint64
	data    []byte
	size    uint64 // SHT_NOBITS only
}

// buildELF lays out a little-endian ELF64 ET_REL file with a null
// section, secs (indices 1..len(secs)) and a trailing .shstrtab. It uses
// extended section numbering when needed.
func buildELF(machine elf.Machine, secs []synthSection) []byte {
	var shstr bytes.Buffer
	shstr.WriteByte(0)
	names := make([]uint32, len(secs)+1)
	for i, s := range secs {
		names[i] = uint32(shstr.Len())
		shstr.WriteString(s.name + "\x00")
	}
	names[len(secs)] = uint32(shstr.Len())
	shstr.WriteString(".shstrtab\x00")
	secs = append(secs, synthSection{name: ".shstrtab", typ: elf.SHT_STRTAB, align: 1, data: shstr.Bytes()})

	out := make([]byte, ehdrSize)
	offs := make([]uint64, len(secs))
	for i, s := range secs {
		a := max(int(s.align), 1)
		for len(out)%a != 0 {
			out = append(out, 0)
		}
		offs[i] = uint64(len(out))
		if s.typ != elf.SHT_NOBITS {
			out = append(out, s.data...)
		}
	}
	for len(out)%8 != 0 {
		out = append(out, 0)
	}
	shoff := len(out)
	count := len(secs) + 1
	out = append(out, make([]byte, shdrSize*count)...)
	for i, s := range secs {
		h := out[shoff+(i+1)*shdrSize:]
		le.PutUint32(h[0:], names[i])
		le.PutUint32(h[4:], uint32(s.typ))
		le.PutUint64(h[8:], uint64(s.flags))
		le.PutUint64(h[24:], offs[i])
		size := uint64(len(s.data))
		if s.typ == elf.SHT_NOBITS {
			size = s.size
		}
		le.PutUint64(h[32:], size)
		le.PutUint32(h[40:], s.link)
		le.PutUint32(h[44:], s.info)
		le.PutUint64(h[48:], s.align)
		le.PutUint64(h[56:], s.entsize)
	}

	copy(out, elf.ELFMAG)
	out[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	out[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	out[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	le.PutUint16(out[16:], uint16(elf.ET_REL))
	le.PutUint16(out[18:], uint16(machine))
	le.PutUint32(out[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(out[40:], uint64(shoff))
	le.PutUint16(out[52:], ehdrSize)
	le.PutUint16(out[58:], shdrSize)
	if count < int(elf.SHN_LORESERVE) {
		le.PutUint16(out[60:], uint16(count))
	} else {
		le.PutUint64(out[shoff+32:], uint64(count))
	}
	if strndx := count - 1; strndx < int(elf.SHN_LORESERVE) {
		le.PutUint16(out[62:], uint16(strndx))
	} else {
		le.PutUint16(out[62:], uint16(elf.SHN_XINDEX))
		le.PutUint32(out[shoff+40:], uint32(strndx))
	}
	return out
}

// synthObject returns a minimal object defining the function patched_fn
// that calls the undefined ext_counter, followed by extra empty sections.
func synthObject(machine elf.Machine, extra int) []byte {
	text := make([]byte, 16)
	var relType uint32
	var addend int64
	switch machine {
	case elf.EM_AARCH64:
		le.PutUint32(text[0:], 0xa9bf7bfd)  // stp x29, x30, [sp, #-16]!
		le.PutUint32(text[4:], 0x94000000)  // bl ext_counter
		le.PutUint32(text[8:], 0xa8c17bfd)  // ldp x29, x30, [sp], #16
		le.PutUint32(text[12:], 0xd65f03c0) // ret
		relType = uint32(elf.R_AARCH64_CALL26)
	default:
		copy(text, []byte{0x48, 0x83, 0xec, 0x08, 0xe8, 0, 0, 0, 0, 0x48, 0x83, 0xc4, 0x08, 0xc3, 0x90, 0x90})
		relType = uint32(elf.R_X86_64_PLT32)
		addend = -4
	}
	strtab := []byte("\x00x.c\x00patched_fn\x00ext_counter\x00")
	sym := func(name uint32, bind elf.SymBind, typ elf.SymType, shndx uint16, value, size uint64) []byte {
		b := make([]byte, symSize)
		le.PutUint32(b[0:], name)
		b[4] = elf.ST_INFO(bind, typ)
		le.PutUint16(b[6:], shndx)
		le.PutUint64(b[8:], value)
		le.PutUint64(b[16:], size)
		return b
	}
	var symtab []byte
	symtab = append(symtab, make([]byte, symSize)...)
	symtab = append(symtab, sym(1, elf.STB_LOCAL, elf.STT_FILE, uint16(elf.SHN_ABS), 0, 0)...)
	symtab = append(symtab, sym(0, elf.STB_LOCAL, elf.STT_SECTION, 1, 0, 0)...)
	symtab = append(symtab, sym(5, elf.STB_GLOBAL, elf.STT_FUNC, 1, 0, 16)...)
	symtab = append(symtab, sym(16, elf.STB_GLOBAL, elf.STT_NOTYPE, 0, 0, 0)...)
	rela := make([]byte, relaSize)
	off := uint64(5)
	if machine == elf.EM_AARCH64 {
		off = 4
	}
	le.PutUint64(rela[0:], off)
	le.PutUint64(rela[8:], 4<<32|uint64(relType))
	le.PutUint64(rela[16:], uint64(addend))

	secs := []synthSection{
		{name: ".text", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, align: 16, data: text},
		{name: ".rela.text", typ: elf.SHT_RELA, flags: elf.SHF_INFO_LINK, link: 4, info: 1, align: 8, entsize: relaSize, data: rela},
		{name: ".bss", typ: elf.SHT_NOBITS, flags: elf.SHF_ALLOC | elf.SHF_WRITE, align: 4, size: 4},
		{name: ".symtab", typ: elf.SHT_SYMTAB, link: 5, info: 3, align: 8, entsize: symSize, data: symtab},
		{name: ".strtab", typ: elf.SHT_STRTAB, align: 1, data: strtab},
	}
	for range extra {
		secs = append(secs, synthSection{name: ".x", typ: elf.SHT_PROGBITS, align: 1})
	}
	return buildELF(machine, secs)
}

// sectionHeaderAt returns the raw header of the section called name.
func sectionHeaderAt(tb testing.TB, img []byte, name string) []byte {
	tb.Helper()
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		tb.Fatal(err)
	}
	shoff := le.Uint64(img[40:])
	for i, s := range f.Sections {
		if s.Name == name {
			return img[shoff+uint64(i)*shdrSize : shoff+uint64(i+1)*shdrSize]
		}
	}
	tb.Fatalf("no section %s", name)
	return nil
}

// sectionData returns the file bytes of the section called name.
func sectionData(tb testing.TB, img []byte, name string) []byte {
	tb.Helper()
	h := sectionHeaderAt(tb, img, name)
	off, size := le.Uint64(h[24:]), le.Uint64(h[32:])
	return img[off : off+size]
}
