package link_test

import (
	"debug/elf"
	"testing"

	"github.com/hotpatch/hotpatch/arch"
	"github.com/hotpatch/hotpatch/link"
	"github.com/hotpatch/hotpatch/patchfile"
)

// A section size no patch can have (a corrupt or hostile .bss) is refused
// by the plan instead of wrapping the layout or panicking in Link.
func TestHugeSectionRefused(t *testing.T) {
	for _, c := range []struct{ size, align uint64 }{{1 << 62, 8}, {1<<64 - 4096, 8}, {3 << 30, 8}, {8, 1 << 63}} {
		spec := &patchfile.Spec{Machine: elf.EM_X86_64, Symbols: []patchfile.Symbol{{}}, Sections: []patchfile.Section{
			{Index: 1, Name: ".text", Type: elf.SHT_PROGBITS, Flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, Align: 16, Size: 1, Data: []byte{0xc3}},
			{Index: 2, Name: ".bss", Type: elf.SHT_NOBITS, Flags: elf.SHF_ALLOC | elf.SHF_WRITE, Align: c.align, Size: c.size},
		}}
		plan, err := link.NewPlan(spec, arch.AMD64, 4096, 0, 0, nil)
		if err == nil {
			t.Errorf(".bss of %#x bytes aligned to %#x: plan of %#x bytes accepted", c.size, c.align, plan.Size)
		}
	}
}
