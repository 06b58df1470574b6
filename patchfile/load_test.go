package patchfile

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// metaSection encodes a .hotpatch.meta section with an arbitrary payload.
func metaSection(version uint32, payload []byte) []byte {
	out := make([]byte, MetaHeaderSize)
	copy(out, MetaMagic)
	le.PutUint32(out[8:], version)
	le.PutUint32(out[12:], uint32(len(payload)))
	return append(out, payload...)
}

// imageWithMeta packs obj with raw section contents, bypassing Pack's
// checks, so that Load's own checks can be exercised.
func imageWithMeta(t *testing.T, obj, meta []byte) []byte {
	t.Helper()
	o, err := parseObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return appendPatchSections(o, obj, meta)
}

// validPayload returns the metadata JSON Pack would write, as a generic
// map that tests can mutate.
func validPayload(t *testing.T) map[string]any {
	t.Helper()
	m := testMeta()
	m.Version = FormatVersion
	m.Arch = "amd64"
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstFunc(m map[string]any) map[string]any {
	return m["functions"].([]any)[0].(map[string]any)
}

func TestLoadTruncated(t *testing.T) {
	imgs := [][]byte{mustPack(t, synthObject(elf.EM_X86_64, 0), testMeta())}
	if _, err := lookGCC(); err == nil {
		imgs = append(imgs, mustPack(t, compile(t, testSource, "-fPIC", "-g"), testMeta()))
	}
	for _, img := range imgs {
		for n := 0; n < len(img); n++ {
			_, err := Load(img[:n])
			if err == nil {
				t.Fatalf("Load of %d of %d bytes succeeded", n, len(img))
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Load of %d bytes: %v does not match ErrMalformed", n, err)
			}
		}
	}
}

func TestLoadNotPatchImage(t *testing.T) {
	_, err := Load(synthObject(elf.EM_X86_64, 0))
	if !errors.Is(err, ErrNotPatchImage) {
		t.Fatalf("Load(object) = %v, want ErrNotPatchImage", err)
	}
	if errors.Is(err, ErrMalformed) {
		t.Error("a plain object is not malformed")
	}
}

func TestLoadMetaHeader(t *testing.T) {
	obj := synthObject(elf.EM_X86_64, 0)
	payload := mustJSON(t, validPayload(t))

	if _, err := Load(imageWithMeta(t, obj, metaSection(1, payload))); err != nil {
		t.Fatalf("valid hand-built image: %v", err)
	}

	bad := metaSection(1, payload)
	copy(bad, "HOTPATCX")
	cases := []struct {
		name string
		meta []byte
		want error
		msg  string
	}{
		{"bad magic", bad, ErrMalformed, "bad magic"},
		{"version 0", metaSection(0, payload), ErrUnsupportedVersion, "version 0"},
		{"newer version", metaSection(FormatVersion+1, payload), ErrUnsupportedVersion, "upgrade"},
		{"huge version", metaSection(0xffffffff, payload), ErrUnsupportedVersion, "version"},
		{"short", []byte("HOTPATCH\x01\x00"), ErrMalformed, "too short"},
		{"empty", nil, ErrMalformed, "too short"},
		{"length too big", func() []byte { b := metaSection(1, payload); le.PutUint32(b[12:], uint32(len(payload)+1)); return b }(), ErrMalformed, "payload length"},
		{"length too small", func() []byte { b := metaSection(1, payload); le.PutUint32(b[12:], 3); return b }(), ErrMalformed, "payload length"},
	}
	for _, tc := range cases {
		_, err := Load(imageWithMeta(t, obj, tc.meta))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Load = %v, want %v mentioning %q", tc.name, err, tc.want, tc.msg)
		}
	}
}

func TestLoadMetaJSON(t *testing.T) {
	obj := synthObject(elf.EM_X86_64, 0)
	mutated := func(f func(m map[string]any)) []byte {
		m := validPayload(t)
		f(m)
		return mustJSON(t, m)
	}
	valid := string(mustJSON(t, validPayload(t)))
	cases := []struct {
		name    string
		payload []byte
		msg     string
	}{
		{"not json", []byte("not json"), "invalid JSON"},
		{"array", []byte("[]"), "not a JSON object"},
		{"truncated", []byte(valid[:len(valid)-1]), "invalid JSON"},
		{"trailing", []byte(valid + "{}"), "after the top-level object"},
		{"trailing garbage", []byte(valid + "x"), "after the top-level object"},
		{"duplicate key", []byte(`{"id":"a",` + valid[1:]), "duplicate JSON key \"id\""},
		{"nested duplicate", []byte(strings.Replace(valid, `"new":`, `"new":"x","new":`, 1)), "duplicate JSON key \"new\""},
		{"case alias", []byte(strings.Replace(valid, `"id":`, `"ID":`, 1)), "must be spelled \"id\""},
		{"wrong type", mutated(func(m map[string]any) { m["id"] = 5 }), "metadata"},
		{"negative size", mutated(func(m map[string]any) { firstFunc(m)["old_size"] = -1 }), "metadata"},
		{"deep nesting", []byte(`{"builder":{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `},` + valid[1:]), "nested too deeply"},
		{"version mismatch", mutated(func(m map[string]any) { m["version"] = 2 }), "does not match the section header version"},
		{"arch mismatch", mutated(func(m map[string]any) { m["arch"] = "arm64" }), "arch"},
		{"empty id", mutated(func(m map[string]any) { m["id"] = "" }), "id is empty"},
		{"bad id", mutated(func(m map[string]any) { m["id"] = "a b" }), "may only contain"},
		{"null functions", mutated(func(m map[string]any) { m["functions"] = nil }), "at least one function"},
		{"new not defined", mutated(func(m map[string]any) { firstFunc(m)["new"] = "ext_counter" }), "not defined"},
		{"bad hash", mutated(func(m map[string]any) { firstFunc(m)["old_hash"] = "sha256:xyz" }), "old_hash"},
		{"bad build id", mutated(func(m map[string]any) { m["target_build_id"] = "XYZ" }), "target_build_id"},
		{"duplicate old", mutated(func(m map[string]any) {
			fs := m["functions"].([]any)
			m["functions"] = append(fs, fs[0])
		}), "already replaced"},
	}
	for _, key := range metaRequired {
		cases = append(cases, struct {
			name    string
			payload []byte
			msg     string
		}{"missing " + key, mutated(func(m map[string]any) { delete(m, key) }), "required field " + key})
	}
	for _, key := range funcRequired {
		cases = append(cases, struct {
			name    string
			payload []byte
			msg     string
		}{"missing function " + key, mutated(func(m map[string]any) { delete(firstFunc(m), key) }), "required field functions[0]." + key})
	}
	for _, tc := range cases {
		_, err := Load(imageWithMeta(t, obj, metaSection(1, tc.payload)))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Load = %v, want ErrMalformed mentioning %q", tc.name, err, tc.msg)
		}
	}
}

// Readers must accept fields added by later minor revisions.
func TestLoadAcceptsUnknownFields(t *testing.T) {
	m := validPayload(t)
	m["future"] = map[string]any{"nested": []any{1, "x"}}
	firstFunc(m)["future_func_field"] = true
	spec, err := Load(imageWithMeta(t, synthObject(elf.EM_X86_64, 0), metaSection(1, mustJSON(t, m))))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Meta.ID != testMeta().ID {
		t.Errorf("ID = %q", spec.Meta.ID)
	}
}

// patchImage returns a copy of img after f edited it.
func patchImage(img []byte, f func(b []byte)) []byte {
	c := bytes.Clone(img)
	f(c)
	return c
}

func TestLoadStructuralErrors(t *testing.T) {
	img := mustPack(t, synthObject(elf.EM_X86_64, 0), testMeta())
	if _, err := Load(img); err != nil {
		t.Fatal(err)
	}
	rela := func(b []byte) []byte { return sectionData(t, b, ".rela.text") }
	symtab := func(b []byte) []byte { return sectionData(t, b, ".symtab") }
	hdr := func(b []byte, name string) []byte { return sectionHeaderAt(t, b, name) }

	cases := []struct {
		name string
		img  []byte
		want error
		msg  string
	}{
		{"elf magic", patchImage(img, func(b []byte) { b[1] = 'X' }), ErrMalformed, "not an ELF file"},
		{"elf version", patchImage(img, func(b []byte) { b[elf.EI_VERSION] = 2 }), ErrMalformed, "ELF version"},
		{"reloc symbol out of range", patchImage(img, func(b []byte) { le.PutUint32(rela(b)[12:], 9999) }), ErrMalformed, "symbol index 9999 out of range"},
		{"reloc offset out of range", patchImage(img, func(b []byte) { le.PutUint64(rela(b), 16) }), ErrMalformed, "offset 0x10 is outside .text"},
		{"rela entsize", patchImage(img, func(b []byte) { le.PutUint64(hdr(b, ".rela.text")[56:], 16) }), ErrMalformed, "entry size"},
		{"rela link", patchImage(img, func(b []byte) { le.PutUint32(hdr(b, ".rela.text")[40:], 1) }), ErrMalformed, "does not link to the symbol table"},
		{"rela target", patchImage(img, func(b []byte) { le.PutUint32(hdr(b, ".rela.text")[44:], 999) }), ErrMalformed, "does not exist"},
		{"rela on bss", patchImage(img, func(b []byte) { le.PutUint32(hdr(b, ".rela.text")[44:], 3) }), ErrMalformed, "no file data"},
		{"rela on meta", patchImage(img, func(b []byte) { le.PutUint32(hdr(b, ".rela.text")[44:], 7) }), ErrMalformed, "targets .hotpatch.meta"},
		{"SHT_REL", withSectionType(t, img, ".rela.text", elf.SHT_REL), ErrUnsupportedObject, "SHT_RELA"},
		{"symbol section", patchImage(img, func(b []byte) { le.PutUint16(symtab(b)[3*symSize+6:], 200) }), ErrMalformed, "section 200, which does not exist"},
		{"symbol reserved section", patchImage(img, func(b []byte) { le.PutUint16(symtab(b)[3*symSize+6:], 0xff05) }), ErrMalformed, "does not exist"},
		{"symbol xindex", patchImage(img, func(b []byte) { le.PutUint16(symtab(b)[3*symSize+6:], 0xffff) }), ErrUnsupportedObject, "extended section index"},
		{"symbol outside section", patchImage(img, func(b []byte) { le.PutUint64(symtab(b)[3*symSize+16:], 17) }), ErrMalformed, "lies outside section .text"},
		{"symbol name", patchImage(img, func(b []byte) { le.PutUint32(symtab(b)[3*symSize:], 5000) }), ErrMalformed, "invalid name offset"},
		{"no symtab", withSectionType(t, img, ".symtab", elf.SHT_PROGBITS), ErrMalformed, "no symbol table"},
		{"two symtabs", patchImage(img, func(b []byte) {
			h := hdr(b, ".rela.text")
			le.PutUint32(h[4:], uint32(elf.SHT_SYMTAB))
			le.PutUint32(h[40:], 5)
		}), ErrMalformed, "more than one symbol table"},
		{"section beyond file", patchImage(img, func(b []byte) { le.PutUint64(hdr(b, ".text")[24:], uint64(len(img))) }), ErrMalformed, "beyond the end of the file"},
		{"huge section", patchImage(img, func(b []byte) { le.PutUint64(hdr(b, ".text")[32:], 1<<62) }), ErrMalformed, ""},
		{"bad alignment", patchImage(img, func(b []byte) { le.PutUint64(hdr(b, ".text")[48:], 12) }), ErrMalformed, "power of two"},
		{"shoff beyond file", patchImage(img, func(b []byte) { le.PutUint64(b[40:], 1<<40) }), ErrMalformed, "beyond the end"},
		{"shnum too big", patchImage(img, func(b []byte) { le.PutUint16(b[60:], 0xfe00) }), ErrMalformed, "beyond the end"},
		{"shentsize", patchImage(img, func(b []byte) { le.PutUint16(b[58:], 40) }), ErrMalformed, "entry size"},
		{"shstrndx", patchImage(img, func(b []byte) { le.PutUint16(b[62:], 200) }), ErrMalformed, "name table index"},
		{"missing sig", patchImage(img, func(b []byte) {
			i := bytes.LastIndex(b, []byte(SignatureSectionName+"\x00"))
			copy(b[i:], ".hotpatch.xyz")
		}), ErrMalformed, ".hotpatch.sig section is missing"},
		{"missing meta", patchImage(img, func(b []byte) {
			i := bytes.LastIndex(b, []byte(MetaSectionName+"\x00"))
			copy(b[i:], ".hotpatch.xyzw")
		}), ErrNotPatchImage, "no .hotpatch.meta"},
		{"two meta", patchImage(img, func(b []byte) {
			copy(hdr(b, SignatureSectionName)[:4], hdr(b, MetaSectionName)[:4])
		}), ErrMalformed, "more than one .hotpatch.meta"},
		{"sig size", patchImage(img, func(b []byte) { le.PutUint64(hdr(b, SignatureSectionName)[32:], 64) }), ErrMalformed, "want 128"},
		{"sig flags", patchImage(img, func(b []byte) { le.PutUint64(hdr(b, SignatureSectionName)[8:], uint64(elf.SHF_ALLOC)) }), ErrMalformed, "without flags"},
		{"sig over header", patchImage(img, func(b []byte) { le.PutUint64(hdr(b, SignatureSectionName)[24:], 0) }), ErrMalformed, "overlaps the ELF header"},
		{"sig over text", patchImage(img, func(b []byte) { le.PutUint64(hdr(b, SignatureSectionName)[24:], 0x40) }), ErrMalformed, "overlaps"},
		{"sig over meta", patchImage(img, func(b []byte) {
			le.PutUint64(hdr(b, SignatureSectionName)[24:], le.Uint64(hdr(b, MetaSectionName)[24:]))
		}), ErrMalformed, "overlaps section .hotpatch.meta"},
		{"sig over section headers", patchImage(img, func(b []byte) { le.PutUint64(hdr(b, SignatureSectionName)[24:], le.Uint64(b[40:])) }), ErrMalformed, "overlaps the section header table"},
		{"sig garbage", patchImage(img, func(b []byte) { sectionData(t, b, SignatureSectionName)[3] = 1 }), ErrMalformed, "bad magic"},
	}
	for _, tc := range cases {
		_, err := Load(tc.img)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Load = %v, want %v mentioning %q", tc.name, err, tc.want, tc.msg)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

func TestFormatError(t *testing.T) {
	err := error(&FormatError{Off: 0x40, Msg: "something is wrong"})
	if !errors.Is(err, ErrMalformed) {
		t.Error("FormatError does not match ErrMalformed")
	}
	if got := err.Error(); got != "malformed patch image: something is wrong (at file offset 0x40)" {
		t.Errorf("Error() = %q", got)
	}
	if got := (&FormatError{Off: -1, Msg: "x"}).Error(); got != "malformed patch image: x" {
		t.Errorf("Error() = %q", got)
	}
	var fe *FormatError
	_, err = Load([]byte("\x7fELF"))
	if !errors.As(err, &fe) || fe.Off != 0 {
		t.Errorf("Load(short) = %#v", err)
	}
}
