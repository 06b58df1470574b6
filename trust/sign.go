package trust

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/hotpatch/hotpatch/patchfile"
)

// Sign returns a copy of the patch image raw with its signature slot
// holding k's signature. raw must load (patchfile.Load); a signature
// already in it is replaced. Only the slot's bytes differ from raw.
func Sign(raw []byte, k PrivateKey) ([]byte, error) {
	if len(k.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key is %d bytes, want %d", ErrInvalidKey, len(k.Key), ed25519.PrivateKeySize)
	}
	spec, err := patchfile.Load(raw)
	if err != nil {
		return nil, err
	}
	pub := k.Public()
	id := pub.ID()
	value := ed25519.Sign(k.Key, patchfile.SignedMessage(raw, spec.SignatureSlot))
	signed, err := patchfile.WithSignature(raw, patchfile.Signature{
		Algorithm: patchfile.AlgorithmEd25519,
		KeyID:     id[:],
		Value:     value,
	})
	if err != nil {
		return nil, err
	}
	// Check the result the way a host will, so a signer never ships an
	// image that its own key rejects.
	check, err := patchfile.Load(signed)
	if err != nil {
		return nil, fmt.Errorf("signed image does not load: %w", err)
	}
	if _, err := Verify(check, []PublicKey{pub}); err != nil {
		return nil, fmt.Errorf("signed image does not verify: %w", err)
	}
	return signed, nil
}

// Verify checks spec's signature against keys. spec must come from
// patchfile.Load, which has validated the image and located the slot. On
// success it returns the signer's fingerprint. Otherwise the error is a
// *VerifyError wrapping:
//
//   - ErrUnsigned when the slot is empty;
//   - ErrUntrustedKey when no key in keys has the slot's key id (the
//     error carries that key id's fingerprint);
//   - ErrBadSignature when a trusted key has the slot's key id but the
//     signature does not verify over patchfile.SignedMessage, i.e. some
//     byte outside the slot changed after signing or the signature value
//     is corrupt.
//
// The signature is read again from spec.Raw, so a Spec whose Signature
// field disagrees with its bytes is refused too.
func Verify(spec *patchfile.Spec, keys []PublicKey) (string, error) {
	if spec == nil {
		return "", errors.New("verify: no patch image")
	}
	slot := spec.SignatureSlot
	if slot.Off < 0 || slot.Len != patchfile.SignatureSlotSize || slot.Off > len(spec.Raw)-slot.Len {
		return "", &VerifyError{Reason: "signature slot is outside the image", Err: ErrBadSignature}
	}
	sig, err := patchfile.DecodeSignature(spec.Raw[slot.Off : slot.Off+slot.Len])
	if err != nil {
		return "", &VerifyError{Reason: "signature slot is malformed: " + err.Error(), Err: ErrBadSignature}
	}
	if sig == nil {
		if spec.Signature != nil {
			return "", &VerifyError{Reason: "signature does not match the image's signature slot", Err: ErrBadSignature}
		}
		return "", &VerifyError{Reason: ErrUnsigned.Error(), Err: ErrUnsigned}
	}
	fp := KeyIDFingerprint(sig.KeyID)
	if spec.Signature == nil || spec.Signature.Algorithm != sig.Algorithm ||
		!bytes.Equal(spec.Signature.KeyID, sig.KeyID) || !bytes.Equal(spec.Signature.Value, sig.Value) {
		return "", &VerifyError{Reason: "signature does not match the image's signature slot", Fingerprint: fp, Err: ErrBadSignature}
	}
	if sig.Algorithm != patchfile.AlgorithmEd25519 || len(sig.Value) != ed25519.SignatureSize {
		return "", &VerifyError{Reason: fmt.Sprintf("unsupported signature algorithm %q", sig.Algorithm), Fingerprint: fp, Err: ErrBadSignature}
	}
	var signer *PublicKey
	for i := range keys {
		if equalKey(keys[i], sig.KeyID) {
			signer = &keys[i]
			break
		}
	}
	if signer == nil {
		return "", &VerifyError{Reason: "patch is signed by an untrusted key", Fingerprint: fp, Err: ErrUntrustedKey}
	}
	msg := patchfile.SignedMessage(spec.Raw, slot)
	if !ed25519.Verify(signer.Key, msg, sig.Value) {
		return "", &VerifyError{
			Reason:      "signature does not verify: the image was modified after signing or the signature is corrupt",
			Fingerprint: fp,
			Err:         ErrBadSignature,
		}
	}
	return fp, nil
}

// VerifyImage loads raw with patchfile.Load and verifies it with Verify,
// returning the spec only when both succeed.
func VerifyImage(raw []byte, keys []PublicKey) (*patchfile.Spec, string, error) {
	spec, err := patchfile.Load(raw)
	if err != nil {
		return nil, "", err
	}
	fp, err := Verify(spec, keys)
	if err != nil {
		return nil, "", err
	}
	return spec, fp, nil
}

// FindKey returns the key in keys with the given fingerprint.
func FindKey(keys []PublicKey, fingerprint string) (PublicKey, bool) {
	for _, k := range keys {
		if len(k.Key) == ed25519.PublicKeySize && k.Fingerprint() == fingerprint {
			return k, true
		}
	}
	return PublicKey{}, false
}
