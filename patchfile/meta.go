package patchfile

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MetaMagic opens the .hotpatch.meta section. It is followed by a
// little-endian uint32 format version and a little-endian uint32 payload
// length, then the JSON payload.
const MetaMagic = "HOTPATCH"

// MetaHeaderSize is the size of the .hotpatch.meta header before the JSON
// payload.
const MetaHeaderSize = 16

// maxIDLen bounds Metadata.ID, which becomes part of a mapping name.
const maxIDLen = 64

// encodeMeta returns the .hotpatch.meta section contents for m.
func encodeMeta(m Metadata) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMetadata, err)
	}
	payload := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	out := make([]byte, MetaHeaderSize, MetaHeaderSize+len(payload))
	copy(out, MetaMagic)
	le.PutUint32(out[8:], uint32(m.Version))
	le.PutUint32(out[12:], uint32(len(payload)))
	return append(out, payload...), nil
}

// decodeMeta parses the .hotpatch.meta section contents found at file
// offset off. It checks the JSON shape; validateMeta checks the values.
func decodeMeta(data []byte, off int64) (Metadata, error) {
	var m Metadata
	if len(data) < MetaHeaderSize {
		return m, formatErr(off, "%s is %d bytes, too short for its %d-byte header", MetaSectionName, len(data), MetaHeaderSize)
	}
	if string(data[:8]) != MetaMagic {
		return m, formatErr(off, "%s has bad magic %q, want %q", MetaSectionName, data[:8], MetaMagic)
	}
	version := le.Uint32(data[8:])
	if version == 0 || version > FormatVersion {
		return m, fmt.Errorf("%w: patch image format version %d; this hotpatch reads versions 1 to %d (upgrade hotpatch to load this patch)", ErrUnsupportedVersion, version, FormatVersion)
	}
	if n := le.Uint32(data[12:]); uint64(n) != uint64(len(data)-MetaHeaderSize) {
		return m, formatErr(off+12, "%s payload length %d does not match the section size (%d bytes of payload)", MetaSectionName, n, len(data)-MetaHeaderSize)
	}
	payload := data[MetaHeaderSize:]
	poff := off + MetaHeaderSize
	if err := checkJSONSyntax(payload); err != nil {
		return m, formatErr(poff, "metadata: %v", err)
	}
	if err := json.Unmarshal(payload, &m); err != nil {
		return m, formatErr(poff, "metadata: %v", err)
	}
	if err := checkJSONFields(payload); err != nil {
		return m, formatErr(poff, "metadata: %v", err)
	}
	if m.Version != int(version) {
		return m, formatErr(poff, "metadata: version %d does not match the section header version %d", m.Version, version)
	}
	return m, nil
}

var (
	metaFields     = []string{"version", "id", "sequence", "target_build_id", "target_path", "arch", "functions", "description", "cves", "builder"}
	metaRequired   = []string{"version", "id", "target_build_id", "arch", "functions"}
	funcFields     = []string{"old", "old_file", "old_addr", "old_size", "old_hash", "new"}
	funcRequired   = []string{"old", "old_size", "old_hash", "new"}
	maxJSONNesting = 64
)

// checkJSONSyntax requires a single JSON object with no duplicate keys,
// so that every reader of the payload sees the same values.
func checkJSONSyntax(payload []byte) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("invalid JSON: %v", err)
	}
	if tok != json.Delim('{') {
		return errors.New("payload is not a JSON object")
	}
	if err := walkJSON(dec, json.Delim('{'), 1); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON: data after the top-level object")
	}
	return nil
}

// walkJSON consumes the rest of the container opened by open.
func walkJSON(dec *json.Decoder, open json.Delim, depth int) error {
	if depth > maxJSONNesting {
		return errors.New("JSON nested too deeply")
	}
	seen := make(map[string]bool)
	for dec.More() {
		if open == '{' {
			tok, err := dec.Token()
			if err != nil {
				return fmt.Errorf("invalid JSON: %v", err)
			}
			key, _ := tok.(string)
			if seen[key] {
				return fmt.Errorf("duplicate JSON key %q", key)
			}
			seen[key] = true
		}
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("invalid JSON: %v", err)
		}
		if d, ok := tok.(json.Delim); ok {
			if err := walkJSON(dec, d, depth+1); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("invalid JSON: %v", err)
	}
	return nil
}

// checkJSONFields requires the mandatory keys and rejects keys that only
// differ in case from known ones, which encoding/json would silently
// accept as aliases.
func checkJSONFields(payload []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil {
		return fmt.Errorf("invalid JSON: %v", err)
	}
	if err := checkKeys(top, metaFields, metaRequired, ""); err != nil {
		return err
	}
	var funcs []map[string]json.RawMessage
	if err := json.Unmarshal(top["functions"], &funcs); err != nil {
		return fmt.Errorf("functions: %v", err)
	}
	for i, f := range funcs {
		if err := checkKeys(f, funcFields, funcRequired, fmt.Sprintf("functions[%d].", i)); err != nil {
			return err
		}
	}
	return nil
}

func checkKeys(obj map[string]json.RawMessage, known, required []string, prefix string) error {
	for key := range obj {
		for _, k := range known {
			if key != k && strings.EqualFold(key, k) {
				return fmt.Errorf("field %s%s must be spelled %q", prefix, key, k)
			}
		}
	}
	for _, k := range required {
		if _, ok := obj[k]; !ok {
			return fmt.Errorf("required field %s%s is missing", prefix, k)
		}
	}
	return nil
}

// validateMeta checks metadata values against the object they describe.
// It returns a plain message; callers decide which error kind it is.
func validateMeta(m *Metadata, o *object) error {
	if m.Version < 1 || m.Version > FormatVersion {
		return fmt.Errorf("version %d is not between 1 and %d", m.Version, FormatVersion)
	}
	if err := checkID(m.ID); err != nil {
		return err
	}
	if m.TargetBuildID == "" {
		return errors.New("target_build_id is empty")
	}
	if len(m.TargetBuildID)%2 != 0 || !isLowerHex(m.TargetBuildID) {
		return fmt.Errorf("target_build_id %q is not lowercase hex bytes", m.TargetBuildID)
	}
	if want := archOf(o.machine); m.Arch != want {
		return fmt.Errorf("arch %q does not match the object's machine %v (want %q)", m.Arch, o.machine, want)
	}
	if len(m.Functions) == 0 {
		return errors.New("no functions: a patch must replace at least one function")
	}
	type oldKey struct{ old, file string }
	seen := make(map[oldKey]int)
	defined := definedSymbols(o)
	for i, fn := range m.Functions {
		where := fmt.Sprintf("functions[%d]", i)
		if fn.Old == "" {
			return fmt.Errorf("%s: old is empty", where)
		}
		if fn.New == "" {
			return fmt.Errorf("%s (%s): new is empty", where, fn.Old)
		}
		if fn.OldSize == 0 {
			return fmt.Errorf("%s (%s): old_size is 0", where, fn.Old)
		}
		if h, ok := strings.CutPrefix(fn.OldHash, "sha256:"); !ok || len(h) != 64 || !isLowerHex(h) {
			return fmt.Errorf("%s (%s): old_hash %q is not \"sha256:\" followed by 64 lowercase hex digits", where, fn.Old, fn.OldHash)
		}
		k := oldKey{fn.Old, fn.OldFile}
		if j, dup := seen[k]; dup {
			return fmt.Errorf("%s: %s is already replaced by functions[%d]", where, describeOld(fn), j)
		}
		seen[k] = i
		if err := checkNewSymbol(o, defined, fn.New); err != nil {
			return fmt.Errorf("%s (%s): %v", where, fn.Old, err)
		}
	}
	return nil
}

func checkID(id string) error {
	if id == "" {
		return errors.New("id is empty")
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("id is %d bytes long, at most %d are allowed", len(id), maxIDLen)
	}
	if id == "." || id == ".." {
		return fmt.Errorf("id %q is reserved", id)
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("id %q may only contain letters, digits, '.', '_' and '-'", id)
		}
	}
	return nil
}

// definedSymbols maps names to the symbols defined in the object's
// sections.
func definedSymbols(o *object) map[string][]int {
	out := make(map[string][]int)
	for i, s := range o.symbols {
		if i > 0 && definedIn(s, o.shnum) {
			out[s.Name] = append(out[s.Name], i)
		}
	}
	return out
}

// checkNewSymbol requires name to be exactly one defined function symbol
// in an executable section.
func checkNewSymbol(o *object, defined map[string][]int, name string) error {
	switch n := len(defined[name]); {
	case n == 0:
		return fmt.Errorf("new function %q is not defined in the object", name)
	case n > 1:
		return fmt.Errorf("new function %q is defined more than once in the object", name)
	}
	s := o.symbols[defined[name][0]]
	if s.Type != elf.STT_FUNC {
		return fmt.Errorf("new function %q is a %v symbol, not STT_FUNC", name, s.Type)
	}
	if h := o.headers[s.Section]; h.Flags&elf.SHF_EXECINSTR == 0 || h.Flags&elf.SHF_ALLOC == 0 {
		return fmt.Errorf("new function %q is in section %s, which is not executable", name, o.names[s.Section])
	}
	return nil
}

// definedIn reports whether s is defined in one of the object's sections.
func definedIn(s Symbol, shnum int) bool {
	return s.Section != elf.SHN_UNDEF && s.Section < elf.SHN_LORESERVE && int(s.Section) < shnum &&
		s.Type != elf.STT_SECTION && s.Type != elf.STT_FILE
}

func isLowerHex(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func describeOld(fn Function) string {
	if fn.OldFile != "" {
		return fn.Old + "@" + fn.OldFile
	}
	return fn.Old
}
