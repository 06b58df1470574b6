package target

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hotpatch/hotpatch/patchfile"
)

// PatchMetadata describes, for a patch image, the functions of the binary at
// path that replaces redirect. Each replace is OLD=NEW, where OLD may be
// NAME@FILE to pick one of several static functions of the same name.
func PatchMetadata(path, id string, replaces []string) (patchfile.Metadata, error) {
	buildID, err := BuildIDOfFile(path)
	if err != nil {
		return patchfile.Metadata{}, fmt.Errorf("%s: %w (link the target with --build-id)", path, err)
	}
	abs, _ := filepath.Abs(path)
	syms, err := LoadSymbols(path, path)
	if err != nil {
		return patchfile.Metadata{}, err
	}
	meta := patchfile.Metadata{ID: id, TargetBuildID: buildID, TargetPath: abs}
	for _, r := range replaces {
		oldSpec, newName, ok := strings.Cut(r, "=")
		if !ok || oldSpec == "" || newName == "" {
			return patchfile.Metadata{}, fmt.Errorf("replace %q: want OLD=NEW (OLD may be NAME@FILE.c for a static function)", r)
		}
		oldName, oldFile, _ := strings.Cut(oldSpec, "@")
		sym, err := syms.Lookup(oldName, oldFile)
		if err != nil {
			return patchfile.Metadata{}, err
		}
		code, err := ReadFunction(path, sym)
		if err != nil {
			return patchfile.Metadata{}, err
		}
		sum := sha256.Sum256(code)
		meta.Functions = append(meta.Functions, patchfile.Function{Old: oldName, OldFile: oldFile, OldAddr: sym.Value,
			OldSize: sym.Size, OldHash: "sha256:" + hex.EncodeToString(sum[:]), New: newName})
	}
	return meta, nil
}
