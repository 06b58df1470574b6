package patchfile

import (
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
)

// UndefinedSymbols returns the names of the symbols the patch imports
// from the target or its libraries, sorted and without duplicates.
func (s *Spec) UndefinedSymbols() []string {
	seen := make(map[string]bool)
	var out []string
	for i, sym := range s.Symbols {
		if i == 0 || sym.Section != elf.SHN_UNDEF || sym.Name == "" ||
			sym.Type == elf.STT_SECTION || sym.Type == elf.STT_FILE || seen[sym.Name] {
			continue
		}
		seen[sym.Name] = true
		out = append(out, sym.Name)
	}
	sort.Strings(out)
	return out
}

// SymbolByName returns the index in s.Symbols of the defined symbol
// called name. When several match, one defined in a section wins over
// SHN_ABS and SHN_COMMON ones, then a global or weak one over locals, then
// the lowest index.
func (s *Spec) SymbolByName(name string) (int, bool) {
	found, best := -1, -1
	for i, sym := range s.Symbols {
		if sym.Name != name {
			continue
		}
		if r := symbolRank(i, sym); r > best {
			found, best = i, r
		}
	}
	return found, found >= 0
}

// symbolIndex answers SymbolByName for every name at once, so that
// reports over many functions stay linear.
func (s *Spec) symbolIndex() map[string]int {
	idx := make(map[string]int)
	rank := make(map[string]int)
	for i, sym := range s.Symbols {
		r := symbolRank(i, sym)
		if r < 0 {
			continue
		}
		if best, ok := rank[sym.Name]; !ok || r > best {
			idx[sym.Name], rank[sym.Name] = i, r
		}
	}
	return idx
}

// symbolRank orders candidates for SymbolByName; -1 means not a candidate.
func symbolRank(i int, sym Symbol) int {
	if i == 0 || sym.Section == elf.SHN_UNDEF || sym.Type == elf.STT_SECTION || sym.Type == elf.STT_FILE {
		return -1
	}
	rank := 0
	if sym.Section < elf.SHN_LORESERVE {
		rank += 2
	}
	if sym.Bind != elf.STB_LOCAL {
		rank++
	}
	return rank
}

// Describe writes a human-readable summary of the patch image, as shown
// by `hotpatch inspect`. It reports whether a signature is present but
// does not verify it.
func (s *Spec) Describe(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	m := s.Meta
	line := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }

	line("id:\t%s", printable(m.ID))
	line("format:\tversion %d", m.Version)
	line("arch:\t%s (%v)", printable(m.Arch), s.Machine)
	line("target build-id:\t%s", printable(m.TargetBuildID))
	if m.TargetPath != "" {
		line("target path:\t%s", printable(m.TargetPath))
	}
	if m.Sequence != 0 {
		line("sequence:\t%d", m.Sequence)
	}
	if m.Description != "" {
		line("description:\t%s", printable(m.Description))
	}
	if len(m.CVEs) > 0 {
		cves := make([]string, len(m.CVEs))
		for i, c := range m.CVEs {
			cves[i] = printable(c)
		}
		line("cves:\t%s", strings.Join(cves, ", "))
	}
	line("signature:\t%s", s.signatureSummary())
	if err := tw.Flush(); err != nil {
		return err
	}

	line("\nfunctions (%d):", len(m.Functions))
	syms := s.symbolIndex()
	for _, fn := range m.Functions {
		newSize := "?"
		if i, ok := syms[fn.New]; ok {
			newSize = strconv.FormatUint(s.Symbols[i].Size, 10)
		}
		line("  %s\taddr %#x\tsize %d\t%s\t->  %s\tsize %s", printable(describeOld(fn)), fn.OldAddr, fn.OldSize, printable(fn.OldHash), printable(fn.New), newSize)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	line("\nsections (%d):", len(s.Sections))
	for _, sec := range s.Sections {
		line("  [%d]\t%s\t%v\tsize %#x\talign %d\tflags %s\trelocs %d", sec.Index, printable(sec.Name), sec.Type, sec.Size, sec.Align, flagLetters(sec.Flags), len(sec.Relocs))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	imports := s.UndefinedSymbols()
	line("\nimports (%d):", len(imports))
	for _, name := range imports {
		line("  %s", printable(name))
	}
	return tw.Flush()
}

func (s *Spec) signatureSummary() string {
	if s.Signature == nil {
		return "unsigned"
	}
	return fmt.Sprintf("present, %s, key %s (not verified here)", s.Signature.Algorithm, hex.EncodeToString(s.Signature.KeyID))
}

// Inspect JSON shapes. Field names are part of the CLI's output contract.
type (
	inspectJSON struct {
		Metadata  Metadata       `json:"metadata"`
		Machine   string         `json:"machine"`
		Functions []functionJSON `json:"functions"`
		Sections  []sectionJSON  `json:"sections"`
		Imports   []string       `json:"imports"`
		Signature signatureJSON  `json:"signature"`
	}
	functionJSON struct {
		Old        string `json:"old"`
		OldFile    string `json:"old_file,omitempty"`
		New        string `json:"new"`
		NewSection string `json:"new_section"`
		NewSize    uint64 `json:"new_size"`
	}
	sectionJSON struct {
		Index  int    `json:"index"`
		Name   string `json:"name"`
		Type   string `json:"type"`
		Flags  string `json:"flags"`
		Align  uint64 `json:"align"`
		Size   uint64 `json:"size"`
		Relocs int    `json:"relocs"`
	}
	signatureJSON struct {
		State     string `json:"state"` // "unsigned" or "present"; never "verified"
		Algorithm string `json:"algorithm,omitempty"`
		KeyID     string `json:"key_id,omitempty"` // lowercase hex
	}
)

// JSON returns the machine-readable form of Describe, as printed by
// `hotpatch inspect --json`: an indented object with the fields
// "metadata", "machine", "functions", "sections", "imports" and
// "signature" {"state", "algorithm", "key_id"}.
func (s *Spec) JSON() ([]byte, error) {
	out := inspectJSON{
		Metadata:  s.Meta,
		Machine:   s.Machine.String(),
		Functions: []functionJSON{},
		Sections:  []sectionJSON{},
		Imports:   s.UndefinedSymbols(),
		Signature: signatureJSON{State: "unsigned"},
	}
	if out.Imports == nil {
		out.Imports = []string{}
	}
	syms := s.symbolIndex()
	secNames := make(map[int]string)
	for _, sec := range s.Sections {
		secNames[sec.Index] = sec.Name
	}
	for _, fn := range s.Meta.Functions {
		f := functionJSON{Old: fn.Old, OldFile: fn.OldFile, New: fn.New}
		if i, ok := syms[fn.New]; ok {
			f.NewSize = s.Symbols[i].Size
			f.NewSection = secNames[int(s.Symbols[i].Section)]
		}
		out.Functions = append(out.Functions, f)
	}
	for _, sec := range s.Sections {
		out.Sections = append(out.Sections, sectionJSON{
			Index:  sec.Index,
			Name:   sec.Name,
			Type:   sec.Type.String(),
			Flags:  flagLetters(sec.Flags),
			Align:  sec.Align,
			Size:   sec.Size,
			Relocs: len(sec.Relocs),
		})
	}
	if sig := s.Signature; sig != nil {
		out.Signature = signatureJSON{State: "present", Algorithm: sig.Algorithm, KeyID: hex.EncodeToString(sig.KeyID)}
	}
	return json.MarshalIndent(out, "", "  ")
}

// flagLetters renders section flags with readelf's letters.
func flagLetters(f elf.SectionFlag) string {
	letters := []struct {
		flag elf.SectionFlag
		c    byte
	}{
		{elf.SHF_WRITE, 'W'}, {elf.SHF_ALLOC, 'A'}, {elf.SHF_EXECINSTR, 'X'},
		{elf.SHF_MERGE, 'M'}, {elf.SHF_STRINGS, 'S'}, {elf.SHF_INFO_LINK, 'I'},
		{elf.SHF_LINK_ORDER, 'L'}, {elf.SHF_OS_NONCONFORMING, 'O'}, {elf.SHF_GROUP, 'G'},
		{elf.SHF_TLS, 'T'}, {elf.SHF_COMPRESSED, 'C'}, {0x80000000, 'E'},
	}
	var b []byte
	for _, l := range letters {
		if f&l.flag != 0 {
			b = append(b, l.c)
		}
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// printable quotes strings that would otherwise put control characters
// from an untrusted image on the user's terminal.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			return strconv.Quote(s)
		}
	}
	return s
}
