package patchfile

import "debug/elf"

// FormatVersion is the version of the .hotpatch.meta payload this package
// writes. Load accepts versions 1..FormatVersion.
const FormatVersion = 1

// Section names the patch image adds to the relocatable object.
const (
	MetaSectionName      = ".hotpatch.meta"
	SignatureSectionName = ".hotpatch.sig"
)

// Spec is a fully validated patch image. It is pure data: nothing in it
// depends on a running process.
type Spec struct {
	Meta    Metadata
	Machine elf.Machine // elf.EM_X86_64 or elf.EM_AARCH64

	// Sections are the object's allocatable (SHF_ALLOC) sections, in file
	// order. Index is the ELF section header index.
	Sections []Section
	// Symbols mirrors .symtab; Symbols[0] is the null symbol so that a
	// relocation's symbol index indexes this slice directly.
	Symbols []Symbol

	// Signature is nil when the signature slot is empty (unsigned image).
	Signature *Signature
	// Raw is the whole file as loaded.
	Raw []byte
	// SignatureSlot locates the signature section's contents inside Raw.
	SignatureSlot Range
}

// Range is a byte range [Off, Off+Len) inside a file.
type Range struct{ Off, Len int }

// Section is one allocatable section of the patch object.
type Section struct {
	Index  int // ELF section header index
	Name   string
	Type   elf.SectionType // SHT_PROGBITS, SHT_NOBITS, SHT_INIT_ARRAY, ...
	Flags  elf.SectionFlag // SHF_ALLOC | SHF_EXECINSTR | SHF_WRITE | SHF_TLS ...
	Align  uint64
	Size   uint64
	Data   []byte // nil for SHT_NOBITS; len(Data) == Size otherwise
	Relocs []Reloc
}

// Reloc is one RELA relocation applied to a Section.
type Reloc struct {
	Offset uint64 // offset inside the section
	Type   uint32 // arch-specific relocation type (elf.R_X86_64_*, elf.R_AARCH64_*)
	Symbol int    // index into Spec.Symbols
	Addend int64
}

// Symbol is one .symtab entry.
type Symbol struct {
	Name    string
	Value   uint64
	Size    uint64
	Bind    elf.SymBind
	Type    elf.SymType
	Section elf.SectionIndex // ELF shndx: SHN_UNDEF, SHN_ABS, SHN_COMMON or a section index
}

// Metadata is the versioned .hotpatch.meta payload.
type Metadata struct {
	Version       int        `json:"version"`
	ID            string     `json:"id"`
	Sequence      uint64     `json:"sequence,omitempty"`
	TargetBuildID string     `json:"target_build_id"` // lowercase hex of the NT_GNU_BUILD_ID note
	TargetPath    string     `json:"target_path"`     // a hint only; matching is by build-id
	Arch          string     `json:"arch"`            // "amd64" or "arm64"
	Functions     []Function `json:"functions"`
	Description   string     `json:"description,omitempty"`
	CVEs          []string   `json:"cves,omitempty"`
	// Builder holds extra metadata written by `hotpatch build`; opaque here.
	Builder map[string]any `json:"builder,omitempty"`
}

// Function is one replaced function.
type Function struct {
	Old     string `json:"old"`                // symbol name in the target image
	OldFile string `json:"old_file,omitempty"` // disambiguates local symbols: the STT_FILE name preceding it
	OldAddr uint64 `json:"old_addr"`           // st_value in the target image (link-time address)
	OldSize uint64 `json:"old_size"`
	OldHash string `json:"old_hash"` // "sha256:" + lowercase hex of the old function's bytes
	New     string `json:"new"`      // defined STT_FUNC symbol in the patch object
}

// Signature is the parsed content of a filled signature slot.
type Signature struct {
	Algorithm string // "ed25519"
	KeyID     []byte // SHA-256 of the public key
	Value     []byte // the signature over SignedMessage(Raw)
}
