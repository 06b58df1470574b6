package patchfile

import (
	"bytes"
	"fmt"
)

// Signature slot layout (all integers little-endian):
//
//	0   8  magic "HPSIG\x00\x00\x00"
//	8   2  slot version (1)
//	10  2  algorithm (1 = ed25519)
//	12  4  reserved, zero
//	16  32 key id: SHA-256 of the public key
//	48  64 signature
//	112 16 reserved, zero
const (
	// SignatureSlotSize is the size of the .hotpatch.sig section.
	SignatureSlotSize = 128
	// SignatureMagic opens a filled signature slot.
	SignatureMagic = "HPSIG\x00\x00\x00"
	// SignatureSlotVersion is the slot layout version this package writes.
	SignatureSlotVersion = 1

	// AlgorithmEd25519 is the only signature algorithm defined so far.
	AlgorithmEd25519 = "ed25519"

	sigAlgEd25519 = 1
	sigKeyIDOff   = 16
	sigKeyIDLen   = 32
	sigValueOff   = 48
	sigValueLen   = 64
)

// SignedMessage returns the bytes a signature over raw covers: a copy of
// raw with the slot's contents replaced by zeros. Every other byte of the
// file, headers included, is covered. Parts of slot outside raw are
// ignored.
func SignedMessage(raw []byte, slot Range) []byte {
	msg := bytes.Clone(raw)
	if msg == nil {
		msg = []byte{}
	}
	start, end := slot.Off, slot.Off+slot.Len
	if slot.Off < 0 || slot.Len < 0 || end < start {
		return msg
	}
	start = min(start, len(msg))
	end = min(end, len(msg))
	clear(msg[start:end])
	return msg
}

// EncodeSignature returns the SignatureSlotSize bytes that store sig in
// the signature slot.
func EncodeSignature(sig Signature) ([]byte, error) {
	if sig.Algorithm != AlgorithmEd25519 {
		return nil, fmt.Errorf("signature algorithm %q is not supported (only %q)", sig.Algorithm, AlgorithmEd25519)
	}
	if len(sig.KeyID) != sigKeyIDLen {
		return nil, fmt.Errorf("signature key id is %d bytes, want %d (SHA-256 of the public key)", len(sig.KeyID), sigKeyIDLen)
	}
	if len(sig.Value) != sigValueLen {
		return nil, fmt.Errorf("ed25519 signature is %d bytes, want %d", len(sig.Value), sigValueLen)
	}
	out := make([]byte, SignatureSlotSize)
	copy(out, SignatureMagic)
	le.PutUint16(out[8:], SignatureSlotVersion)
	le.PutUint16(out[10:], sigAlgEd25519)
	copy(out[sigKeyIDOff:], sig.KeyID)
	copy(out[sigValueOff:], sig.Value)
	return out, nil
}

// DecodeSignature parses signature slot contents. It returns nil, nil for
// an all-zero (unsigned) slot and an error for a malformed non-zero one.
func DecodeSignature(slot []byte) (*Signature, error) {
	if len(slot) != SignatureSlotSize {
		return nil, formatErr(-1, "signature slot is %d bytes, want %d", len(slot), SignatureSlotSize)
	}
	if isZero(slot) {
		return nil, nil
	}
	if string(slot[:8]) != SignatureMagic {
		return nil, formatErr(-1, "signature slot is neither empty nor a signature (bad magic %q)", slot[:8])
	}
	if v := le.Uint16(slot[8:]); v != SignatureSlotVersion {
		return nil, fmt.Errorf("%w: signature slot version %d; this hotpatch reads version %d", ErrUnsupportedVersion, v, SignatureSlotVersion)
	}
	if a := le.Uint16(slot[10:]); a != sigAlgEd25519 {
		return nil, formatErr(-1, "signature slot names unknown algorithm %d", a)
	}
	if !isZero(slot[12:sigKeyIDOff]) || !isZero(slot[sigValueOff+sigValueLen:]) {
		return nil, formatErr(-1, "signature slot has non-zero reserved bytes")
	}
	return &Signature{
		Algorithm: AlgorithmEd25519,
		KeyID:     bytes.Clone(slot[sigKeyIDOff : sigKeyIDOff+sigKeyIDLen]),
		Value:     bytes.Clone(slot[sigValueOff : sigValueOff+sigValueLen]),
	}, nil
}

// WithSignature returns a copy of the patch image raw with its signature
// slot set to sig. No other byte changes, so SignedMessage is the same
// before and after.
func WithSignature(raw []byte, sig Signature) ([]byte, error) {
	enc, err := EncodeSignature(sig)
	if err != nil {
		return nil, err
	}
	spec, err := Load(raw)
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(raw)
	copy(out[spec.SignatureSlot.Off:spec.SignatureSlot.Off+spec.SignatureSlot.Len], enc)
	return out, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
