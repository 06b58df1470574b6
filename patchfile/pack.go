package patchfile

import (
	"bytes"
	"debug/elf"
	"fmt"
	"strings"
)

// Pack turns a compiled relocatable object into a patch image by
// appending the .hotpatch.meta and .hotpatch.sig sections. The object's
// bytes are kept as they are, and existing section indices do not change,
// so symbols and relocations stay valid. meta.Version is set to
// FormatVersion and meta.Arch defaults to the object's machine. The
// result is checked with Load before it is returned.
func Pack(object []byte, meta Metadata) ([]byte, error) {
	o, err := parseObject(object)
	if err != nil {
		return nil, err
	}
	if len(o.hotpatch) > 0 {
		return nil, fmt.Errorf("%w: it already has %s; pack the original compiler output instead", ErrAlreadyPacked, strings.Join(o.hotpatch, ", "))
	}
	meta.Version = FormatVersion
	if meta.Arch == "" {
		meta.Arch = archOf(o.machine)
	}
	if err := validateMeta(&meta, o); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMetadata, err)
	}
	metaData, err := encodeMeta(meta)
	if err != nil {
		return nil, err
	}

	out := appendPatchSections(o, object, metaData)
	if _, err := Load(out); err != nil {
		return nil, fmt.Errorf("packed image does not load: %w", err)
	}
	return out, nil
}

// appendPatchSections returns object with metaData as .hotpatch.meta and
// an empty signature slot appended, plus a new section name table and
// section header table that describe them.
func appendPatchSections(o *object, object, metaData []byte) []byte {
	out := bytes.Clone(object)
	pad := func(align int) {
		for len(out)%align != 0 {
			out = append(out, 0)
		}
	}

	pad(8)
	metaOff := len(out)
	out = append(out, metaData...)

	pad(8)
	sigOff := len(out)
	out = append(out, make([]byte, SignatureSlotSize)...)

	// A fresh copy of the section name table with the two new names; the
	// old copy stays in place, unreferenced.
	strh := o.headers[o.shstrndx]
	strtab := bytes.Clone(object[strh.Offset : strh.Offset+strh.FileSize])
	if len(strtab) == 0 || strtab[len(strtab)-1] != 0 {
		strtab = append(strtab, 0)
	}
	metaName := len(strtab)
	strtab = append(strtab, MetaSectionName+"\x00"...)
	sigName := len(strtab)
	strtab = append(strtab, SignatureSectionName+"\x00"...)
	strOff := len(out)
	out = append(out, strtab...)

	pad(8)
	newShoff := len(out)
	out = append(out, object[o.shoff:o.shoff+uint64(o.shnum)*shdrSize]...)
	out = append(out, sectionHeader(uint32(metaName), uint64(metaOff), uint64(len(metaData)), 8)...)
	out = append(out, sectionHeader(uint32(sigName), uint64(sigOff), SignatureSlotSize, 8)...)

	shdrs := out[newShoff:]
	str := shdrs[o.shstrndx*shdrSize:]
	le.PutUint64(str[24:], uint64(strOff))
	le.PutUint64(str[32:], uint64(len(strtab)))

	count := o.shnum + 2
	le.PutUint64(out[40:], uint64(newShoff))
	if count < int(elf.SHN_LORESERVE) {
		le.PutUint16(out[60:], uint16(count))
	} else {
		// Extended numbering: e_shnum is 0 and section 0 holds the count.
		le.PutUint16(out[60:], 0)
		le.PutUint64(shdrs[32:], uint64(count))
	}
	return out
}

// sectionHeader encodes an ELF64 SHT_PROGBITS header without flags.
func sectionHeader(name uint32, off, size, align uint64) []byte {
	h := make([]byte, shdrSize)
	le.PutUint32(h[0:], name)
	le.PutUint32(h[4:], uint32(elf.SHT_PROGBITS))
	le.PutUint64(h[24:], off)
	le.PutUint64(h[32:], size)
	le.PutUint64(h[48:], align)
	return h
}
