package trust

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them (or an
// error from the os package, such as fs.ErrNotExist), so callers can
// classify failures with errors.Is.
var (
	// ErrUnsigned reports an image whose signature slot is empty.
	ErrUnsigned = errors.New("patch is not signed")
	// ErrBadSignature reports a signature that does not verify with the
	// trusted key it names: the image was changed after signing, or the
	// signature itself is corrupt.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrUntrustedKey reports an image signed by a key that is not among
	// the trusted keys.
	ErrUntrustedKey = errors.New("patch is signed by an untrusted key")
	// ErrKeyPermissions reports a private key file that group or others
	// may access, or a trust directory or public key file anyone may
	// write.
	ErrKeyPermissions = errors.New("key file permissions are too open")
	// ErrInvalidKey reports a key file that is not in the expected format,
	// holds the other half of a key pair, or is not a regular file.
	ErrInvalidKey = errors.New("invalid key file")
	// ErrKeyExists reports that generating a key pair would overwrite an
	// existing file.
	ErrKeyExists = errors.New("key file already exists")
)

// VerifyError is the error Verify returns when an image is not accepted.
type VerifyError struct {
	// Reason says in a few words why the image is refused.
	Reason string
	// Fingerprint is the fingerprint of the key named by the image's
	// signature slot, or "" for an unsigned image.
	Fingerprint string
	// Err is ErrUnsigned, ErrUntrustedKey or ErrBadSignature.
	Err error
}

func (e *VerifyError) Error() string {
	if e.Fingerprint == "" {
		return e.Reason
	}
	return e.Reason + " (key " + e.Fingerprint + ")"
}

// Unwrap returns the sentinel error.
func (e *VerifyError) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel error this VerifyError wraps.
func (e *VerifyError) Is(target error) bool { return target != nil && target == e.Err }
