package build

import (
	"debug/elf"
	"fmt"
	"strings"
)

// machine is what the builder knows about one architecture: how its
// relocations behave, how the static linker rewrites code (run-pre), where
// a PLT entry's GOT slot is, and which flags the compiler wrapper may add.
// Everything architecture-specific in the builder goes through it.
type machine struct {
	name string // as gcc's target triplets spell it: x86_64, aarch64
	em   elf.Machine

	// classify describes one relocation type.
	classify func(t uint32) relocClass
	// extraFlags are added to every compile (see ExtraFlagsFor).
	extraFlags []string
	// analysisFlags make a second object of each source, the one that is
	// compared and that the patch's code comes from, where the flags that
	// ease that change the code (AnalysisFlagsFor).
	analysisFlags []string
	// runPre matches the original build's function against the target's.
	runPre func(c *preCheck, obj, tgt []byte) error
	// lineShift reports whether two equally long functions differ only in
	// immediate operands a -> b for which moved(a, b) holds.
	lineShift func(p, o []byte, moved func(a, b int64) bool) bool

	// regWrites returns the registers a code section certainly and
	// possibly writes, and whether it calls through a register; nil where
	// the builder's analysis object is the target's own (regs.go).
	regWrites func(sec *section) (sure, maybe uint64, indirect bool)
	// clobberable are the registers a call may clobber that gcc's -fipa-ra
	// lets a caller keep across a call to a function known not to write
	// them; regNames spells a set of them.
	clobberable uint64
	regNames    func(set uint64) string
	// branch reports the relocation types of branches to other functions.
	branch func(t uint32) bool

	// Dynamic relocation types of GOT slots that hold a symbol's address,
	// and of one that holds a load-time address of the image itself.
	jumpSlot, globDat, relative uint32
	// Dynamic relocation types of GOT slots for thread-local variables: a
	// thread-pointer offset (initial exec), a descriptor, the module of a
	// general-dynamic pair and the offset in it.
	tpOff64, tlsDesc, dtpMod64, dtpOff64 uint32
	// tlsBias is the distance from the thread pointer to the executable's
	// thread-local block, given its PT_TLS header.
	tlsBias func(p *elf.Prog) int64
	// Relocation types the compiler uses in .eh_frame: pc_begin and a
	// DW.ref cell's absolute address.
	ehPCRel, abs64 uint32
}

// relocClass is what the builder needs to know about a relocation type.
type relocClass struct {
	// pcAdjust is what the addend lacks to be the referenced offset: on
	// x86-64 a PC-relative field is computed from the end of the 4-byte
	// field (S + A - P with A = offset - 4).
	pcAdjust int64
	pcRel    bool // relative to the place
	got      bool // through a GOT slot, which holds the symbol without the addend
	tls      bool // a thread-local access
	call     bool // a call or tail call, which may go through a PLT entry
	size     int  // width of the field in bytes; 0 for none
}

var (
	machineAMD64 = &machine{
		name: "x86_64", em: elf.EM_X86_64,
		classify:   classifyAMD64,
		extraFlags: []string{"-ffunction-sections", "-fdata-sections"},
		runPre:     runPreAMD64,
		lineShift:  lineShiftAMD64,
		jumpSlot:   uint32(elf.R_X86_64_JMP_SLOT), globDat: uint32(elf.R_X86_64_GLOB_DAT), relative: uint32(elf.R_X86_64_RELATIVE),
		tpOff64: uint32(elf.R_X86_64_TPOFF64), tlsDesc: uint32(elf.R_X86_64_TLSDESC),
		dtpMod64: uint32(elf.R_X86_64_DTPMOD64), dtpOff64: uint32(elf.R_X86_64_DTPOFF64),
		// Variant II: the block ends at the thread pointer.
		tlsBias: func(p *elf.Prog) int64 { return -int64(alignUp(p.Memsz, max(p.Align, 1))) },
		ehPCRel: uint32(elf.R_X86_64_PC32), abs64: uint32(elf.R_X86_64_64),
	}
	// gcc reaches a file's static data on aarch64 through section anchors:
	// one ADRP+ADD to the start of .data, then loads at fixed offsets from
	// it that no relocation names. -fdata-sections puts each object in its
	// own section, which turns anchors off and so changes the code: the
	// original build would no longer match the running binary. So the
	// object run-pre matches gets only function sections, and a second
	// compile without anchors gives the objects that are compared and that
	// the patch is cut from, where every variable is reached by its own
	// name: a fixed function can then be bound to the target's variables,
	// and new ones get sections of their own, whatever the layout.
	machineARM64 = &machine{
		name: "aarch64", em: elf.EM_AARCH64,
		classify:      classifyARM64,
		extraFlags:    []string{"-ffunction-sections"},
		analysisFlags: []string{"-fdata-sections", "-fno-section-anchors"},
		runPre:        runPreARM64,
		lineShift:     lineShiftARM64,
		regWrites:     regWritesARM64,
		clobberable:   a64Clobberable,
		regNames:      regNamesARM64,
		branch:        branchARM64,
		jumpSlot:      uint32(elf.R_AARCH64_JUMP_SLOT), globDat: uint32(elf.R_AARCH64_GLOB_DAT), relative: uint32(elf.R_AARCH64_RELATIVE),
		tpOff64: uint32(elf.R_AARCH64_TLS_TPREL64), tlsDesc: uint32(elf.R_AARCH64_TLSDESC),
		dtpMod64: uint32(elf.R_AARCH64_TLS_DTPMOD64), dtpOff64: uint32(elf.R_AARCH64_TLS_DTPREL64),
		// Variant I: 16 bytes of thread control block, then the block at
		// its alignment.
		tlsBias: func(p *elf.Prog) int64 { return int64(alignUp(16, max(p.Align, 1))) },
		ehPCRel: uint32(elf.R_AARCH64_PREL32), abs64: uint32(elf.R_AARCH64_ABS64),
	}
	machines = []*machine{machineAMD64, machineARM64}
)

// relName names a relocation type of the machine.
func (m *machine) relName(t uint32) string {
	if m.em == elf.EM_AARCH64 {
		return elf.R_AARCH64(t).String()
	}
	return elf.R_X86_64(t).String()
}

// machineFor returns the builder's description of an ELF machine.
func machineFor(em elf.Machine) (*machine, error) {
	for _, m := range machines {
		if m.em == em {
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: machine %v (the builder handles x86-64 and aarch64)", ErrUnsupported, em)
}

// machineOfTriplet maps a compiler's target (gcc -dumpmachine) to a machine;
// nil when the builder does not know it.
func machineOfTriplet(triplet string) *machine {
	arch, _, _ := strings.Cut(strings.TrimSpace(triplet), "-")
	switch arch {
	case "x86_64", "amd64":
		return machineAMD64
	case "aarch64", "arm64":
		return machineARM64
	}
	return nil
}

// ExtraFlagsFor returns the flags the compiler wrapper adds for a target
// machine ("x86_64" or "aarch64", as in HOTPATCH_CC_MACHINE); ExtraFlags
// for any other name.
func ExtraFlagsFor(name string) []string {
	for _, m := range machines {
		if m.name == name {
			return append([]string(nil), m.extraFlags...)
		}
	}
	return append([]string(nil), ExtraFlags...)
}

// AnalysisFlagsFor returns the flags of the second, analysis compile for a
// target machine; nil where the build's own compile serves.
func AnalysisFlagsFor(name string) []string {
	for _, m := range machines {
		if m.name == name {
			return append([]string(nil), m.analysisFlags...)
		}
	}
	return nil
}

func classifyAMD64(t uint32) relocClass {
	var c relocClass
	switch elf.R_X86_64(t) {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX,
		elf.R_X86_64_REX_GOTPCRELX, elf.R_X86_64_PC64, elf.R_X86_64_GOTPC32, elf.R_X86_64_TLSGD,
		elf.R_X86_64_TLSLD, elf.R_X86_64_GOTTPOFF:
		c.pcRel, c.pcAdjust = true, 4
	}
	switch elf.R_X86_64(t) {
	case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX, elf.R_X86_64_GOT32, elf.R_X86_64_GOT64,
		elf.R_X86_64_GOTPCREL64:
		c.got = true
	case elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD, elf.R_X86_64_DTPOFF32, elf.R_X86_64_DTPOFF64, elf.R_X86_64_GOTTPOFF,
		elf.R_X86_64_TPOFF32, elf.R_X86_64_TPOFF64:
		c.tls = true
	case elf.R_X86_64_PLT32:
		c.call = true
	}
	switch elf.R_X86_64(t) {
	case elf.R_X86_64_64, elf.R_X86_64_PC64, elf.R_X86_64_GOTOFF64, elf.R_X86_64_GOTPC64, elf.R_X86_64_DTPOFF64,
		elf.R_X86_64_TPOFF64, elf.R_X86_64_SIZE64, elf.R_X86_64_GOT64, elf.R_X86_64_GOTPCREL64:
		c.size = 8
	case elf.R_X86_64_NONE:
	default:
		c.size = 4
	}
	return c
}

// AArch64 relocations: every code relocation fills a field of one 4-byte
// instruction, and the addend is the offset from the symbol (no PC bias).
func classifyARM64(t uint32) relocClass {
	c := relocClass{size: 4}
	switch r := elf.R_AARCH64(t); {
	case r == elf.R_AARCH64_NONE:
		c.size = 0
	case r == elf.R_AARCH64_ABS64 || r == elf.R_AARCH64_PREL64:
		c.size, c.pcRel = 8, r == elf.R_AARCH64_PREL64
	case r == elf.R_AARCH64_ABS16 || r == elf.R_AARCH64_PREL16:
		c.size, c.pcRel = 2, r == elf.R_AARCH64_PREL16
	case r == elf.R_AARCH64_CALL26 || r == elf.R_AARCH64_JUMP26:
		c.call, c.pcRel = true, true
	case r == elf.R_AARCH64_ADR_GOT_PAGE || r == elf.R_AARCH64_LD64_GOT_LO12_NC || r == elf.R_AARCH64_LD64_GOTPAGE_LO15:
		c.got, c.pcRel = true, r == elf.R_AARCH64_ADR_GOT_PAGE
	case r >= 512 && r <= 573: // R_AARCH64_TLSGD_ADR_PREL21 .. R_AARCH64_TLSLE_LDST128_TPREL_LO12_NC
		c.tls = true
	case r == elf.R_AARCH64_PREL32 || r == elf.R_AARCH64_ADR_PREL_PG_HI21 || r == elf.R_AARCH64_ADR_PREL_PG_HI21_NC ||
		r == elf.R_AARCH64_ADR_PREL_LO21 || r == elf.R_AARCH64_LD_PREL_LO19 || r == elf.R_AARCH64_CONDBR19 ||
		r == elf.R_AARCH64_TSTBR14:
		c.pcRel = true
	}
	return c
}
