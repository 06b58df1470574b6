package patchfile

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
)

// Load parses and fully validates a patch image. The returned Spec keeps
// a reference to raw in Spec.Raw; section data is copied. Load never
// panics: every malformed input yields an error.
func Load(raw []byte) (*Spec, error) {
	o, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	if o.meta < 0 {
		return nil, fmt.Errorf("%w: the object has no %s section (pack the compiled object into a patch image first)", ErrNotPatchImage, MetaSectionName)
	}
	if o.sig < 0 {
		return nil, formatErr(-1, "%s section is missing", SignatureSectionName)
	}
	for _, idx := range []int{o.meta, o.sig} {
		h := o.headers[idx]
		if h.Type != elf.SHT_PROGBITS || h.Flags != 0 {
			return nil, formatErr(shdrOff(o, idx), "%s must be a SHT_PROGBITS section without flags (got %v, flags %v)", o.names[idx], h.Type, h.Flags)
		}
	}

	sh := o.headers[o.sig]
	if sh.FileSize != SignatureSlotSize {
		return nil, formatErr(shdrOff(o, o.sig), "%s is %d bytes, want %d", SignatureSectionName, sh.FileSize, SignatureSlotSize)
	}
	slot := Range{Off: int(sh.Offset), Len: SignatureSlotSize}
	if err := o.checkSlotAlone(slot); err != nil {
		return nil, err
	}
	sig, err := DecodeSignature(raw[slot.Off : slot.Off+slot.Len])
	if err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			return nil, &FormatError{Off: int64(slot.Off), Msg: fe.Msg}
		}
		return nil, err
	}

	mh := o.headers[o.meta]
	meta, err := decodeMeta(raw[mh.Offset:mh.Offset+mh.FileSize], int64(mh.Offset))
	if err != nil {
		return nil, err
	}
	if err := validateMeta(&meta, o); err != nil {
		return nil, formatErr(int64(mh.Offset)+MetaHeaderSize, "metadata: %v", err)
	}

	return &Spec{
		Meta:          meta,
		Machine:       o.machine,
		Sections:      o.sections,
		Symbols:       o.symbols,
		Signature:     sig,
		Raw:           raw,
		SignatureSlot: slot,
	}, nil
}

// LoadFile reads and loads the patch image at path.
func LoadFile(path string) (*Spec, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	spec, err := Load(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return spec, nil
}

// checkSlotAlone requires that no other part of the file shares bytes
// with the signature slot: bytes inside the slot are not signed, so
// anything meaningful there could be changed without breaking the
// signature.
func (o *object) checkSlotAlone(slot Range) error {
	start, end := uint64(slot.Off), uint64(slot.Off+slot.Len)
	overlaps := func(off, size uint64) bool { return size > 0 && off < end && start < off+size }
	off := shdrOff(o, o.sig)
	if overlaps(0, ehdrSize) {
		return formatErr(off, "%s overlaps the ELF header", SignatureSectionName)
	}
	if overlaps(o.shoff, uint64(o.shnum)*shdrSize) {
		return formatErr(off, "%s overlaps the section header table", SignatureSectionName)
	}
	if phnum := uint64(le.Uint16(o.raw[56:])); overlaps(le.Uint64(o.raw[32:]), phnum*phdrSize) {
		return formatErr(off, "%s overlaps the program header table", SignatureSectionName)
	}
	for i, h := range o.headers {
		if i == 0 || i == o.sig || h.Type == elf.SHT_NOBITS || h.Type == elf.SHT_NULL {
			continue
		}
		if overlaps(h.Offset, h.FileSize) {
			return formatErr(off, "%s overlaps section %s", SignatureSectionName, o.names[i])
		}
	}
	return nil
}
