// Package patchfile reads and writes hotpatch patch images.
//
// A patch image is a single ELF64 little-endian relocatable object
// (ET_REL, x86-64 or aarch64), exactly as the compiler produced it, with
// two non-allocatable sections appended by Pack. .hotpatch.meta holds a
// 16-byte header (the magic "HOTPATCH", a uint32 format version and a
// uint32 payload length) followed by the JSON encoding of Metadata: the
// patch id, the build-id of the target it applies to and, for each
// replaced function, the old symbol with its size and SHA-256 and the new
// symbol in the object. .hotpatch.sig is a fixed-size slot, zero while
// the image is unsigned, that a signer fills in place; the signature
// covers every byte of the file except the slot's contents (see
// SignedMessage).
//
// Load parses and validates an image into a Spec: the allocatable
// sections with their RELA relocations, the symbol table (with the null
// symbol kept at index 0) and the metadata, ready for the linker. Load
// rejects every malformed input with an error wrapping one of this
// package's sentinel errors, and never panics. Load does not verify
// signatures. docs/format.md describes the format byte by byte.
package patchfile
