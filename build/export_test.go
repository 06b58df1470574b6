package build

import (
	"debug/elf"
	"fmt"
	"strings"

	"github.com/hotpatch/hotpatch/patchfile"
)

// FDEInfo describes one FDE of a patch object's .eh_frame.
type FDEInfo struct {
	Function    string // the patch's function at pc_begin; "" if none starts there
	FuncSize    uint64 // that function's size
	Range       uint64 // pc_range
	LSDA        string // section the LSDA pointer refers to, with the offset
	Personality string // the routine the CIE names (through a DW.ref cell or directly)
}

// PatchFDEs decodes the .eh_frame of a patch object and follows each
// FDE's relocations to what they refer to in the patch.
func PatchFDEs(spec *patchfile.Spec) ([]FDEInfo, error) {
	secs := map[int]*patchfile.Section{}
	var eh *patchfile.Section
	for i := range spec.Sections {
		s := &spec.Sections[i]
		secs[s.Index] = s
		if s.Name == ".eh_frame" {
			eh = s
		}
	}
	if eh == nil {
		return nil, fmt.Errorf("no .eh_frame")
	}
	entries, err := parseEHFrame(eh.Data)
	if err != nil {
		return nil, err
	}
	relocAt := func(s *patchfile.Section, off uint64) *patchfile.Reloc {
		for i := range s.Relocs {
			if s.Relocs[i].Offset == off {
				return &s.Relocs[i]
			}
		}
		return nil
	}
	cies := map[uint64]*ehEntry{}
	for i := range entries {
		if entries[i].cie {
			cies[entries[i].off] = &entries[i]
		}
	}
	var out []FDEInfo
	for _, e := range entries {
		if e.cie {
			continue
		}
		var info FDEInfo
		info.Range = e.pcRange
		r := relocAt(eh, e.pcBegin)
		if r == nil || elf.R_X86_64(r.Type) != elf.R_X86_64_PC32 {
			return nil, fmt.Errorf("FDE at %#x: pc_begin has no PC32 relocation", e.off)
		}
		sym := spec.Symbols[r.Symbol]
		code := secs[int(sym.Section)]
		if code == nil || code.Flags&elf.SHF_EXECINSTR == 0 {
			return nil, fmt.Errorf("FDE at %#x: pc_begin refers to %q outside the patch's code", e.off, sym.Name)
		}
		at := sym.Value + uint64(r.Addend)
		for _, s := range spec.Symbols {
			if s.Section == sym.Section && s.Type == elf.STT_FUNC && s.Value == at {
				info.Function, info.FuncSize = s.Name, s.Size
			}
		}
		if e.lsdaOff >= 0 {
			if lr := relocAt(eh, uint64(e.lsdaOff)); lr != nil {
				ls := spec.Symbols[lr.Symbol]
				sec := secs[int(ls.Section)]
				if sec == nil || !strings.HasPrefix(sec.Name, ".gcc_except_table") {
					return nil, fmt.Errorf("FDE at %#x: LSDA refers to %q, not to a .gcc_except_table of the patch", e.off, ls.Name)
				}
				info.LSDA = fmt.Sprintf("%s+%#x", sec.Name, ls.Value+uint64(lr.Addend))
			}
		}
		cie := cies[e.cieOff]
		if cie.persOff >= 0 {
			pr := relocAt(eh, uint64(cie.persOff))
			if pr == nil {
				return nil, fmt.Errorf("CIE at %#x: personality without relocation", cie.off)
			}
			ps := spec.Symbols[pr.Symbol]
			info.Personality = ps.Name
			if cie.persEnc&0x80 != 0 { // indirect: a cell holding the address
				cell := secs[int(ps.Section)]
				if cell == nil {
					return nil, fmt.Errorf("CIE at %#x: personality cell %q not in the patch", cie.off, ps.Name)
				}
				cr := relocAt(cell, ps.Value)
				if cr == nil || elf.R_X86_64(cr.Type) != elf.R_X86_64_64 {
					return nil, fmt.Errorf("CIE at %#x: personality cell %q has no R_X86_64_64", cie.off, ps.Name)
				}
				info.Personality = spec.Symbols[cr.Symbol].Name
			}
		}
		out = append(out, info)
	}
	return out, nil
}
