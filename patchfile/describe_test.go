package patchfile

import (
	"bytes"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	img := mustPack(t, synthObject(elf.EM_X86_64, 0), testMeta())
	spec, err := Load(img)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := spec.Describe(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"test-patch_1.0", "version 1", "amd64", testMeta().TargetBuildID, "/usr/bin/target",
		"fix the counter", "CVE-2024-0001", "patched_fn@target.c", "size 48", testHash,
		"->  patched_fn", "size 16", ".text", "relocs 1", "flags AX", "ext_counter", "signature:", "unsigned",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Describe output lacks %q:\n%s", want, out)
		}
	}

	sig := testSignature()
	signed, err := WithSignature(img, sig)
	if err != nil {
		t.Fatal(err)
	}
	spec, err = Load(signed)
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := spec.Describe(&buf); err != nil {
		t.Fatal(err)
	}
	want := "present, ed25519, key " + hex.EncodeToString(sig.KeyID) + " (not verified here)"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("signed Describe output lacks %q:\n%s", want, buf.String())
	}
}

func TestDescribeQuotesControlCharacters(t *testing.T) {
	m := testMeta()
	m.Description = "evil\x1b[2J\ttext"
	m.TargetPath = "/bin/\x07bell"
	spec, err := Load(mustPack(t, synthObject(elf.EM_X86_64, 0), m))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := spec.Describe(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(buf.String(), "\x1b\x07") {
		t.Errorf("control characters reached the output: %q", buf.String())
	}
	if !strings.Contains(buf.String(), `"evil\x1b[2J\ttext"`) {
		t.Errorf("description not quoted: %s", buf.String())
	}
}

func TestSpecJSON(t *testing.T) {
	img := mustPack(t, synthObject(elf.EM_AARCH64, 0), testMeta())
	for _, signed := range []bool{false, true} {
		data := img
		if signed {
			var err error
			if data, err = WithSignature(img, testSignature()); err != nil {
				t.Fatal(err)
			}
		}
		spec, err := Load(data)
		if err != nil {
			t.Fatal(err)
		}
		out, err := spec.JSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(out, []byte("\n  \"metadata\": {")) {
			t.Errorf("JSON is not indented:\n%s", out)
		}
		var got struct {
			Metadata  Metadata
			Machine   string
			Functions []map[string]any
			Sections  []map[string]any
			Imports   []string
			Signature map[string]string
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Metadata, spec.Meta) {
			t.Errorf("metadata = %+v", got.Metadata)
		}
		if got.Machine != "EM_AARCH64" || !reflect.DeepEqual(got.Imports, []string{"ext_counter"}) {
			t.Errorf("machine %q imports %v", got.Machine, got.Imports)
		}
		if len(got.Sections) != 2 || got.Sections[0]["name"] != ".text" || got.Sections[0]["relocs"] != 1.0 || got.Sections[0]["flags"] != "AX" {
			t.Errorf("sections = %v", got.Sections)
		}
		if len(got.Functions) != 1 || got.Functions[0]["new_section"] != ".text" || got.Functions[0]["new_size"] != 16.0 {
			t.Errorf("functions = %v", got.Functions)
		}
		wantSig := map[string]string{"state": "unsigned"}
		if signed {
			wantSig = map[string]string{"state": "present", "algorithm": "ed25519", "key_id": hex.EncodeToString(testSignature().KeyID)}
		}
		if !reflect.DeepEqual(got.Signature, wantSig) {
			t.Errorf("signature = %v, want %v", got.Signature, wantSig)
		}
	}
}

func TestSymbolQueries(t *testing.T) {
	spec := &Spec{Symbols: []Symbol{
		{},
		{Name: "a.c", Type: elf.STT_FILE, Section: elf.SHN_ABS},
		{Name: ".text", Type: elf.STT_SECTION, Section: 1},
		{Name: "dup", Type: elf.STT_FUNC, Bind: elf.STB_LOCAL, Section: 1},
		{Name: "dup", Type: elf.STT_FUNC, Bind: elf.STB_GLOBAL, Section: 1},
		{Name: "zeta", Section: elf.SHN_UNDEF, Bind: elf.STB_GLOBAL},
		{Name: "alpha", Section: elf.SHN_UNDEF, Bind: elf.STB_WEAK},
		{Name: "zeta", Section: elf.SHN_UNDEF, Bind: elf.STB_GLOBAL},
		{Name: "", Section: elf.SHN_UNDEF},
		{Name: "local", Type: elf.STT_OBJECT, Bind: elf.STB_LOCAL, Section: 2},
		{Name: "fn", Type: elf.STT_NOTYPE, Bind: elf.STB_GLOBAL, Section: elf.SHN_ABS},
		{Name: "fn", Type: elf.STT_FUNC, Bind: elf.STB_LOCAL, Section: 1},
	}}
	if got := spec.UndefinedSymbols(); !reflect.DeepEqual(got, []string{"alpha", "zeta"}) {
		t.Errorf("UndefinedSymbols = %v", got)
	}
	for name, want := range map[string]int{"dup": 4, "local": 9, "fn": 11, "zeta": -1, "a.c": -1, ".text": -1, "": -1} {
		got, ok := spec.SymbolByName(name)
		if ok != (want >= 0) || (ok && got != want) {
			t.Errorf("SymbolByName(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}
