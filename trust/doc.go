// Package trust signs patch images and decides whether a host accepts
// them.
//
// # Keys
//
// Signing keys are ed25519 key pairs kept in two small text files, each
// holding one line:
//
//	NAME.key  hotpatch-ed25519-private <base64 of the 32-byte seed> [comment]
//	NAME.pub  hotpatch-ed25519-public <base64 of the 32-byte public key> [comment]
//
// The base64 is standard, padded encoding. Blank lines and lines starting
// with '#' are ignored; any other text makes the file invalid. The
// private key file must not be accessible by group or others (mode 0600
// or stricter): LoadPrivateKey refuses it otherwise, like ssh does.
//
// A key is named by its fingerprint, "SHA256:" followed by the 64
// lowercase hex digits of the SHA-256 of the raw 32-byte public key. The
// same 32 bytes are the key id stored in a signed image, so the hex part
// of a fingerprint equals the key id `hotpatch inspect` prints.
//
// # Signatures
//
// Sign fills the image's 128-byte signature slot (see patchfile and
// docs/format.md) with an ed25519 signature over
// patchfile.SignedMessage: the whole file with the slot zeroed. Every
// other byte is covered, headers included, so any change to the code,
// relocations, symbols, metadata or ELF structure after signing makes
// Verify fail. Signing an already signed image replaces the signature;
// nothing else in the file changes.
//
// # Trust
//
// A host trusts the public keys in its trust directory, DefaultTrustDir:
// every *.pub file in /etc/hotpatch/trusted.d, or in the directory named
// by HOTPATCH_TRUST_DIR when that is set. Callers may add keys from other
// files (the CLI's --trust). A missing trust directory holds no keys; it
// is not an error by itself, but then no signed image verifies. A trust
// directory or key file that anyone on the host may write is refused.
//
// Verify returns the signer's fingerprint when the signature is valid and
// made by one of the given keys. Otherwise it returns a *VerifyError whose
// Err is ErrUnsigned, ErrUntrustedKey or ErrBadSignature, so callers can
// tell "nobody signed this", "someone we do not trust signed this" and
// "this was changed after signing" apart with errors.Is.
//
// The package does no logging and keeps no global state apart from
// reading HOTPATCH_TRUST_DIR in DefaultTrustDir.
package trust
