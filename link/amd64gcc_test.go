package link_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/link"
	"github.com/hotpatch/hotpatch/patchfile"
)

// compileAMD64 compiles src with the host's x86-64 gcc and packs it.
func compileAMD64(t *testing.T, src string, flags ...string) *patchfile.Spec {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	dir := t.TempDir()
	c, o := filepath.Join(dir, "p.c"), filepath.Join(dir, "p.o")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-c", "-O2", "-o", o, c}, flags...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %v: %v\n%s", args, err, out)
	}
	obj, err := os.ReadFile(o)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := elf.NewFile(strings.NewReader(string(obj))); err != nil || f.Machine != elf.EM_X86_64 {
		t.Skip("host gcc does not produce x86-64 objects")
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

// x86Insts decodes n bytes of linked code at addr.
func x86Insts(t *testing.T, l *link.Linked, addr uint64, n int) (insts []x86asm.Inst, at []uint64) {
	t.Helper()
	code := l.Code(addr, uint64(n))
	if code == nil {
		t.Fatalf("no code at %#x", addr)
	}
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			t.Fatalf("%#x: % x: %v", addr+uint64(off), code[off:min(off+15, len(code))], err)
		}
		insts, at = append(insts, inst), append(at, addr+uint64(off))
		off += inst.Len
	}
	return insts, at
}

// A call to an undefined weak function that nothing defines must still
// link wherever the patch lies: the call is guarded by a null check, and a
// direct rel32 to address 0 is out of range from patch memory.
func TestAMD64WeakUndefinedCall(t *testing.T) {
	src := `
extern void hook(int) __attribute__((weak));
extern int base_func(int);
int patched(int x) { if (hook) hook(x); return base_func(x); }
`
	spec := compileAMD64(t, src, "-fPIC")
	const baseFn = 0x5555_0000_1000
	plan, err := link.NewPlan(spec, arch.AMD64, 4096, 0, 0, func(name string, tls bool) (link.Resolved, error) {
		if name == "base_func" {
			return link.Resolved{Addr: baseFn, Origin: "base"}, nil
		}
		return link.Resolved{}, os.ErrNotExist
	})
	if err != nil {
		t.Fatal(err)
	}
	base := uint64(baseFn + 1<<30)
	l, err := plan.Link(base)
	if err != nil {
		t.Fatalf("link at %#x: %v", base, err)
	}
	fn := l.Symbols["patched"]
	insts, at := x86Insts(t, l, fn, int(spec.Symbols[symIndex(t, spec, "patched")].Size))
	calls := 0
	for i, inst := range insts {
		if inst.Op != x86asm.CALL {
			continue
		}
		calls++
		to := uint64(int64(at[i]) + int64(inst.Len) + int64(inst.Args[0].(x86asm.Rel)))
		stub, _ := x86Insts(t, l, to, 6)
		mem, ok := stub[0].Args[0].(x86asm.Mem)
		if stub[0].Op != x86asm.JMP || !ok || mem.Base != x86asm.RIP {
			t.Fatalf("call to hook reaches %v, want a stub", stub[0])
		}
		slot := uint64(int64(to) + 6 + mem.Disp)
		if v, ok := linkedWord(l, slot); !ok || v != 0 {
			t.Errorf("hook's slot %#x holds %#x (%v), want 0", slot, v, ok)
		}
	}
	if calls != 1 {
		t.Fatalf("%d calls in %v", calls, insts)
	}
}

// Thread-local references in every model gcc emits end up as the
// variable's offset from %fs, with no call to __tls_get_addr left.
func TestAMD64TLSModels(t *testing.T) {
	src := `
extern __thread int ext_tls;
static __thread int own_tls;
int patched(int x) { own_tls += x; return ext_tls + own_tls; }
`
	tpoff := map[string]int64{"ext_tls": -0x40, "own_tls": -0x38}
	resolve := func(name string, tls bool) (link.Resolved, error) {
		if v, ok := tpoff[name]; ok && tls {
			return link.Resolved{TLS: true, TPOff: v, Origin: "base"}, nil
		}
		return link.Resolved{}, os.ErrNotExist
	}
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"general and local dynamic", []string{"-fPIC"}},
		{"initial exec", []string{"-fPIC", "-ftls-model=initial-exec"}},
		{"local exec", []string{"-fno-pic", "-ftls-model=local-exec"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := compileAMD64(t, src, c.flags...)
			plan, err := link.NewPlan(spec, arch.AMD64, 4096, 0, 0, resolve)
			if err != nil {
				t.Fatal(err)
			}
			l, err := plan.Link(0x7000_0000)
			if err != nil {
				t.Fatal(err)
			}
			fn := l.Symbols["patched"]
			insts, at := x86Insts(t, l, fn, int(spec.Symbols[symIndex(t, spec, "patched")].Size))
			seen := map[int64]bool{}
			for i, inst := range insts {
				if inst.Op == x86asm.CALL {
					t.Errorf("call left at %#x: %v", at[i], inst)
				}
				for _, a := range inst.Args {
					m, ok := a.(x86asm.Mem)
					if !ok {
						continue
					}
					m.Disp = int64(int32(m.Disp))
					switch {
					case m.Segment == x86asm.FS && m.Base == 0:
						seen[m.Disp] = true // %fs:off (local exec)
					case m.Base == x86asm.RIP:
						// initial exec: a GOT slot holding the offset
						if v, ok := linkedWord(l, uint64(int64(at[i])+int64(inst.Len)+m.Disp)); ok {
							seen[int64(v)] = true
						}
					case m.Base != 0 && m.Segment == 0:
						seen[m.Disp] = true // off(%reg) after mov %fs:0
					}
				}
			}
			for name, v := range tpoff {
				if !seen[v] {
					t.Errorf("no reference to %s at %%fs%+#x in %v", name, v, insts)
				}
			}
		})
	}
}
