package patchfile

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of them, so
// callers can classify failures with errors.Is.
var (
	// ErrMalformed reports a file that violates the patch image format.
	// Every *FormatError matches it.
	ErrMalformed = errors.New("malformed patch image")
	// ErrUnsupportedVersion reports a metadata or signature slot version
	// newer than this package understands.
	ErrUnsupportedVersion = errors.New("unsupported patch image version")
	// ErrNotPatchImage reports a well-formed object that carries no
	// .hotpatch.meta section, such as a plain compiler output.
	ErrNotPatchImage = errors.New("not a patch image")
	// ErrAlreadyPacked reports an object given to Pack that already
	// carries .hotpatch.* sections.
	ErrAlreadyPacked = errors.New("object is already a patch image")
	// ErrUnsupportedObject reports a valid ELF file of a kind patches
	// cannot be made of (32-bit, big-endian, not ET_REL, other machine,
	// SHT_REL relocations).
	ErrUnsupportedObject = errors.New("unsupported object")
	// ErrInvalidMetadata reports metadata rejected by Pack before it
	// writes anything.
	ErrInvalidMetadata = errors.New("invalid patch metadata")
)

// FormatError describes a malformed patch image. Off is the file offset
// of the offending structure, or -1 when no single offset applies.
type FormatError struct {
	Off int64
	Msg string
}

func (e *FormatError) Error() string {
	if e.Off < 0 {
		return "malformed patch image: " + e.Msg
	}
	return fmt.Sprintf("malformed patch image: %s (at file offset %#x)", e.Msg, e.Off)
}

// Is makes errors.Is(err, ErrMalformed) true for every FormatError.
func (e *FormatError) Is(target error) bool { return target == ErrMalformed }

func formatErr(off int64, format string, args ...any) error {
	return &FormatError{Off: off, Msg: fmt.Sprintf(format, args...)}
}
