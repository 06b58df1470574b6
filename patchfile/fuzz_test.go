package patchfile

import (
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"strings"
	"testing"
)

func FuzzLoad(f *testing.F) {
	seeds := [][]byte{
		synthObject(elf.EM_X86_64, 0),
		mustPack(f, synthObject(elf.EM_X86_64, 0), testMeta()),
		mustPack(f, synthObject(elf.EM_AARCH64, 0), testMeta()),
	}
	if signed, err := WithSignature(seeds[1], testSignature()); err == nil {
		seeds = append(seeds, signed)
	}
	if _, err := lookGCC(); err == nil {
		for _, flags := range [][]string{{"-fPIC"}, {"-fno-pic"}} {
			seeds = append(seeds, mustPack(f, compile(f, testSource, flags...), testMeta()))
		}
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte("\x7fELF"))
	f.Add(append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 57)...))
	f.Add([]byte("HOTPATCH\x01\x00\x00\x00\x02\x00\x00\x00{}"))

	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := Load(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) &&
				!errors.Is(err, ErrNotPatchImage) && !errors.Is(err, ErrUnsupportedObject) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		checkSpec(t, spec)
		if err := spec.Describe(io.Discard); err != nil {
			t.Fatal(err)
		}
		if _, err := spec.JSON(); err != nil {
			t.Fatal(err)
		}
		signed, err := WithSignature(data, testSignature())
		if err != nil {
			t.Fatalf("WithSignature on a loadable image: %v", err)
		}
		if !bytes.Equal(SignedMessage(signed, spec.SignatureSlot), SignedMessage(data, spec.SignatureSlot)) {
			t.Fatal("signing changed the signed message")
		}
		if _, err := Load(signed); err != nil {
			t.Fatalf("Load after signing: %v", err)
		}
	})
}

// checkSpec asserts the invariants the linker relies on.
func checkSpec(t *testing.T, s *Spec) {
	t.Helper()
	if len(s.Symbols) == 0 || s.Symbols[0] != (Symbol{}) {
		t.Fatal("Symbols[0] is not the null symbol")
	}
	if s.Machine != elf.EM_X86_64 && s.Machine != elf.EM_AARCH64 {
		t.Fatalf("machine %v", s.Machine)
	}
	slot := s.SignatureSlot
	if slot.Len != SignatureSlotSize || slot.Off < 0 || slot.Off+slot.Len > len(s.Raw) {
		t.Fatalf("slot %v outside a %d-byte file", slot, len(s.Raw))
	}
	if len(s.Meta.Functions) == 0 {
		t.Fatal("no functions")
	}
	for _, fn := range s.Meta.Functions {
		i, ok := s.SymbolByName(fn.New)
		if !ok || s.Symbols[i].Type != elf.STT_FUNC {
			t.Fatalf("new function %q not found", fn.New)
		}
	}
	for _, sec := range s.Sections {
		if sec.Flags&elf.SHF_ALLOC == 0 {
			t.Fatalf("section %s is not allocatable", sec.Name)
		}
		if sec.Type == elf.SHT_NOBITS {
			if sec.Data != nil || len(sec.Relocs) > 0 {
				t.Fatalf("NOBITS section %s has data or relocations", sec.Name)
			}
		} else if uint64(len(sec.Data)) != sec.Size {
			t.Fatalf("section %s: %d bytes of data, size %d", sec.Name, len(sec.Data), sec.Size)
		}
		for _, r := range sec.Relocs {
			if r.Symbol < 0 || r.Symbol >= len(s.Symbols) {
				t.Fatalf("section %s: reloc symbol %d out of range", sec.Name, r.Symbol)
			}
			if r.Offset >= sec.Size {
				t.Fatalf("section %s: reloc offset %#x beyond size %#x", sec.Name, r.Offset, sec.Size)
			}
		}
	}
}

// FuzzMetadata fuzzes the metadata payload of an otherwise valid image,
// which random byte flips in FuzzLoad rarely reach past the length check.
func FuzzMetadata(f *testing.F) {
	obj := synthObject(elf.EM_X86_64, 0)
	o, err := parseObject(obj)
	if err != nil {
		f.Fatal(err)
	}
	m := testMeta()
	m.Version, m.Arch = FormatVersion, "amd64"
	valid, err := encodeMeta(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid[MetaHeaderSize:], []byte(nil))
	f.Add([]byte(`{"version":1,"id":"x","target_build_id":"00","arch":"amd64","functions":[{"old":"a","old_size":1,"old_hash":"sha256:`+strings.Repeat("0", 64)+`","new":"patched_fn"}]}`), []byte(nil))
	f.Add([]byte(`{"a":{"b":[1,2,{"c":null}]},"a ":true}`), []byte(nil))
	slot, _ := EncodeSignature(testSignature())
	f.Add(valid[MetaHeaderSize:], slot)

	f.Fuzz(func(t *testing.T, payload, slot []byte) {
		meta := make([]byte, MetaHeaderSize, MetaHeaderSize+len(payload))
		copy(meta, MetaMagic)
		le.PutUint32(meta[8:], FormatVersion)
		le.PutUint32(meta[12:], uint32(len(payload)))
		img := appendPatchSections(o, obj, append(meta, payload...))
		spec, err := Load(img)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if len(slot) == SignatureSlotSize {
			copy(img[spec.SignatureSlot.Off:], slot)
			if spec, err = Load(img); err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
					t.Fatalf("unclassified error: %v", err)
				}
				return
			}
		}
		checkSpec(t, spec)
		if err := spec.Describe(io.Discard); err != nil {
			t.Fatal(err)
		}
		// Metadata that loads must survive a re-encode unchanged.
		again, err := encodeMeta(spec.Meta)
		if err != nil {
			t.Fatal(err)
		}
		spec2, err := Load(appendPatchSections(o, obj, again))
		if err != nil {
			t.Fatalf("re-encoded metadata does not load: %v", err)
		}
		if spec2.Meta.ID != spec.Meta.ID || len(spec2.Meta.Functions) != len(spec.Meta.Functions) {
			t.Fatal("re-encoded metadata differs")
		}
	})
}
