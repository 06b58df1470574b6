package link_test

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/arch/arm64/arm64asm"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/link"
	"github.com/hotpatch/hotpatch/patchfile"
)

// A patch source using what patches use: the base's functions (a call and
// a tail call) and data, its own static data, an import from another
// library, a thread-local variable of the executable, a large array.
const arm64PatchSource = `
extern int base_data;
extern int base_func(int);
extern int imported(int);
extern __thread int tls_var;
static int local_data = 3;
int big[1000];
__attribute__((noinline)) int patched(int x) {
	return base_func(x) + imported(x) + base_data + local_data + tls_var + big[x & 511];
}
int tail(int x) { return base_func(x + 1); }
`

// Where the resolver puts the symbols the patch does not define.
const (
	baseFunc = 0x5555_0000_1000
	baseData = 0x5555_0001_0010
	imported = 0x7fff_1234_5670
	tlsOff   = 0x20
)

func arm64Resolver(name string, tls bool) (link.Resolved, error) {
	switch name {
	case "base_func":
		return link.Resolved{Addr: baseFunc, Origin: "base"}, nil
	case "base_data":
		return link.Resolved{Addr: baseData, Size: 4, Origin: "base"}, nil
	case "imported":
		return link.Resolved{Addr: imported, Far: true, Origin: "libother.so"}, nil
	case "tls_var":
		return link.Resolved{TLS: true, TPOff: tlsOff, Origin: "base"}, nil
	}
	return link.Resolved{}, fmt.Errorf("%s: not found", name)
}

// compileARM64 compiles src with the cross compiler and packs it.
func compileARM64(t *testing.T, src string, flags ...string) *patchfile.Spec {
	t.Helper()
	cc := "aarch64-linux-gnu-gcc"
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("needs %s (apt-get install gcc-aarch64-linux-gnu)", cc)
	}
	dir := t.TempDir()
	c, o := filepath.Join(dir, "p.c"), filepath.Join(dir, "p.o")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-c", "-O2", "-o", o, c}, flags...)
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", cc, args, err, out)
	}
	obj, err := os.ReadFile(o)
	if err != nil {
		t.Fatal(err)
	}
	meta := patchfile.Metadata{ID: "t", TargetBuildID: "00", Functions: []patchfile.Function{
		{Old: "f", OldAddr: 0x1000, OldSize: 8, OldHash: "sha256:" + strings.Repeat("0", 64), New: "patched"},
	}}
	raw, err := patchfile.Pack(obj, meta)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := patchfile.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// linkedWord reads the 64-bit word at addr from the linked patch.
func linkedWord(l *link.Linked, addr uint64) (uint64, bool) {
	for _, s := range l.Segments {
		if lo := l.Base + s.Off; addr >= lo && addr+8 <= lo+uint64(len(s.Data)) {
			return binary.LittleEndian.Uint64(s.Data[addr-lo:]), true
		}
	}
	return 0, false
}

// callTarget follows a BL or B at pc: straight to its target, or through a
// stub (adrp x16; ldr x16, [x16, #lo]; br x16) to the address in its slot.
func callTarget(t *testing.T, l *link.Linked, pc uint64) uint64 {
	t.Helper()
	w := binary.LittleEndian.Uint32(l.Code(pc, 4))
	inst, err := arm64asm.Decode(l.Code(pc, 4))
	if err != nil || (inst.Op != arm64asm.BL && inst.Op != arm64asm.B) {
		t.Fatalf("call site %#x: %08x %v %v", pc, w, inst, err)
	}
	to := pc + uint64(int64(inst.Args[0].(arm64asm.PCRel)))
	stub := l.Code(to, 12)
	if stub == nil {
		return to // outside the patch: a direct call
	}
	adrp := binary.LittleEndian.Uint32(stub)
	ldr := binary.LittleEndian.Uint32(stub[4:])
	if adrp&0x9f00001f != 0x90000010 || ldr&0xffc003ff != 0xf9400210 || binary.LittleEndian.Uint32(stub[8:]) != 0xd61f0200 {
		return to // a function of the patch itself
	}
	imm := int64(int32((adrp>>5&0x7ffff<<2|adrp>>29&3)<<11)) >> 11
	slot := to&^0xfff + uint64(imm<<12) + uint64(ldr>>10&0xfff)*8
	v, ok := linkedWord(l, slot)
	if !ok {
		t.Fatalf("stub at %#x reads slot %#x outside the patch", to, slot)
	}
	return v
}

func TestARM64LinkGCCOutput(t *testing.T) {
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"pic", []string{"-fPIC"}},
		{"small pic", []string{"-fpic"}},
		{"no pic", []string{"-fno-pic"}},
		{"pic trad tls", []string{"-fPIC", "-mtls-dialect=trad"}},
		{"branch protection", []string{"-fPIC", "-mbranch-protection=standard"}},
		{"large model", []string{"-fno-pic", "-mcmodel=large"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := compileARM64(t, arm64PatchSource, c.flags...)
			plan, err := link.NewPlan(spec, arch.ARM64, 4096, 0, 0, arm64Resolver)
			if err != nil {
				t.Fatal(err)
			}
			for _, base := range []uint64{baseFunc + 16<<20, baseFunc + 3<<30} {
				l, err := plan.Link(base)
				if err != nil {
					t.Fatalf("link at %#x: %v", base, err)
				}
				checkARM64Link(t, spec, l)
			}
		})
	}
}

// checkARM64Link decodes every instruction of the linked text and follows
// each call and each relocated reference to the address it must reach.
func checkARM64Link(t *testing.T, spec *patchfile.Spec, l *link.Linked) {
	t.Helper()
	var text *link.Segment
	for i := range l.Segments {
		if l.Segments[i].Name == "text" {
			text = &l.Segments[i]
		}
	}
	if text == nil {
		t.Fatal("no text")
	}
	addrOf := func(name string) (uint64, bool) {
		switch name {
		case "base_func":
			return baseFunc, true
		case "base_data":
			return baseData, true
		case "imported":
			return imported, true
		}
		a, ok := l.Symbols[name]
		return a, ok
	}
	fn := l.Symbols["patched"]
	for _, sec := range spec.Sections {
		if sec.Name != ".text" {
			continue
		}
		for _, r := range sec.Relocs {
			sym := spec.Symbols[r.Symbol].Name
			pc := fn - spec.Symbols[symIndex(t, spec, "patched")].Value + r.Offset
			switch elf.R_AARCH64(r.Type) {
			case elf.R_AARCH64_CALL26, elf.R_AARCH64_JUMP26:
				want, ok := addrOf(sym)
				if !ok {
					continue
				}
				if got := callTarget(t, l, pc); got != want {
					t.Errorf("%v to %s at %#x reaches %#x, want %#x", elf.R_AARCH64(r.Type), sym, pc, got, want)
				}
			case elf.R_AARCH64_TLSDESC_ADR_PAGE21, elf.R_AARCH64_TLSGD_ADR_PAGE21:
				inst, err := arm64asm.Decode(l.Code(pc, 4))
				if err != nil || inst.Op != arm64asm.MOV && inst.Op != arm64asm.MOVZ {
					t.Errorf("TLS sequence at %#x starts with %v", pc, inst)
				}
			case elf.R_AARCH64_TLSDESC_CALL:
				if w := binary.LittleEndian.Uint32(l.Code(pc, 4)); w != 0xd503201f {
					t.Errorf("descriptor call at %#x is %08x, want nop", pc, w)
				}
			}
		}
	}
	// Literal pools (the large model's addresses) hold data, not code.
	data := map[int]bool{}
	for _, sec := range spec.Sections {
		if sec.Name != ".text" {
			continue
		}
		for _, r := range sec.Relocs {
			if elf.R_AARCH64(r.Type) == elf.R_AARCH64_ABS64 {
				data[int(r.Offset)], data[int(r.Offset)+4] = true, true
			}
		}
	}
	textStart := fn - spec.Symbols[symIndex(t, spec, "patched")].Value - (l.Base + text.Off)
	for off := 0; off+4 <= len(text.Data); off += 4 {
		w := binary.LittleEndian.Uint32(text.Data[off:])
		if w == 0 || data[off-int(textStart)] {
			continue // padding, literal data
		}
		if _, err := arm64asm.Decode(text.Data[off:]); err != nil {
			t.Errorf("text+%#x: %08x does not decode: %v", off, w, err)
		}
	}
}

func symIndex(t *testing.T, spec *patchfile.Spec, name string) int {
	t.Helper()
	i, ok := spec.SymbolByName(name)
	if !ok {
		t.Fatalf("%s not in the patch", name)
	}
	return i
}

// A direct data reference (non-PIC) to an import that may lie anywhere is
// refused before anything is linked.
func TestARM64RefuseFarDataWithoutGOT(t *testing.T) {
	spec := compileARM64(t, "extern int far_var; int patched(void) { return far_var; }", "-fno-pic")
	_, err := link.NewPlan(spec, arch.ARM64, 4096, 0, 0, func(name string, tls bool) (link.Resolved, error) {
		return link.Resolved{Addr: imported, Far: true, Origin: "libother.so"}, nil
	})
	if !errors.Is(err, link.ErrNotSupported) {
		t.Fatalf("want ErrNotSupported, got %v", err)
	}
}

// Thread-local variables the patch defines bind to the target's; reached
// through one section anchor, they must keep the target's layout.
func TestARM64TLSAnchorLayout(t *testing.T) {
	src := "__thread int a; static __thread volatile int b; int patched(int x) { return a + b * x; }"
	spec := compileARM64(t, src, "-fno-pic")
	resolve := func(off map[string]int64) link.Resolver {
		return func(name string, tls bool) (link.Resolved, error) {
			v, ok := off[name]
			if !ok {
				return link.Resolved{}, fmt.Errorf("%s: not found", name)
			}
			return link.Resolved{TLS: true, TPOff: v}, nil
		}
	}
	va := spec.Symbols[symIndex(t, spec, "a")].Value
	vb := spec.Symbols[symIndex(t, spec, "b")].Value
	same := map[string]int64{"a": 0x100 + int64(va), "b": 0x100 + int64(vb)}
	swapped := map[string]int64{"a": 0x100 + int64(vb), "b": 0x100 + int64(va)}
	if _, err := link.NewPlan(spec, arch.ARM64, 4096, 0, 0, resolve(same)); err != nil {
		t.Fatalf("same layout: %v", err)
	}
	if _, err := link.NewPlan(spec, arch.ARM64, 4096, 0, 0, resolve(swapped)); !errors.Is(err, link.ErrNotSupported) {
		t.Fatalf("different layout: want ErrNotSupported, got %v", err)
	}
	spec = compileARM64(t, src, "-fno-pic", "-fno-section-anchors")
	if _, err := link.NewPlan(spec, arch.ARM64, 4096, 0, 0, resolve(swapped)); err != nil {
		t.Fatalf("without anchors: %v", err)
	}
}
