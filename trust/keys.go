package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// Key file line prefixes.
const (
	PublicKeyType  = "hotpatch-ed25519-public"
	PrivateKeyType = "hotpatch-ed25519-private"
)

// Key file name suffixes used by WriteKeyFiles and LoadTrustDir.
const (
	PrivateKeySuffix = ".key"
	PublicKeySuffix  = ".pub"
)

// maxKeyFileSize bounds how much of a key file is read. A key file is one
// short line; anything bigger is not a key file.
const maxKeyFileSize = 16 << 10

// PublicKey is an ed25519 public key with where it came from.
type PublicKey struct {
	Key     ed25519.PublicKey
	Comment string // free text from the key file, possibly empty
	Source  string // file the key was read from, "" if none
}

// ID returns the key id: the SHA-256 of the raw public key.
func (k PublicKey) ID() [sha256.Size]byte { return sha256.Sum256(k.Key) }

// Fingerprint returns the key's fingerprint, "SHA256:" and 64 hex digits.
func (k PublicKey) Fingerprint() string { return Fingerprint(k.Key) }

// PrivateKey is an ed25519 private key with where it came from.
type PrivateKey struct {
	Key     ed25519.PrivateKey
	Comment string // free text from the key file, possibly empty
	Source  string // file the key was read from, "" if none
}

// Public returns the public half of k, with the same comment and no source.
func (k PrivateKey) Public() PublicKey {
	if len(k.Key) != ed25519.PrivateKeySize {
		return PublicKey{Comment: k.Comment}
	}
	return PublicKey{Key: k.Key.Public().(ed25519.PublicKey), Comment: k.Comment}
}

// Fingerprint returns the fingerprint of a raw ed25519 public key:
// "SHA256:" followed by the lowercase hex SHA-256 of its 32 bytes.
func Fingerprint(pub ed25519.PublicKey) string {
	id := sha256.Sum256(pub)
	return KeyIDFingerprint(id[:])
}

// KeyIDFingerprint returns the fingerprint for a key id as stored in a
// signature slot (the SHA-256 of the public key).
func KeyIDFingerprint(id []byte) string { return "SHA256:" + hex.EncodeToString(id) }

// GenerateKey makes a new key pair from rand (crypto/rand.Reader when nil).
func GenerateKey(rand io.Reader, comment string) (PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return PrivateKey{Key: priv, Comment: cleanComment(comment)}, nil
}

// MarshalPublicKey returns the public key file contents for k.
func MarshalPublicKey(k PublicKey) ([]byte, error) {
	if len(k.Key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key is %d bytes, want %d", ErrInvalidKey, len(k.Key), ed25519.PublicKeySize)
	}
	return marshalLine(PublicKeyType, k.Key, k.Comment), nil
}

// MarshalPrivateKey returns the private key file contents for k. Only the
// 32-byte seed is stored; the public half is derived from it.
func MarshalPrivateKey(k PrivateKey) ([]byte, error) {
	if len(k.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key is %d bytes, want %d", ErrInvalidKey, len(k.Key), ed25519.PrivateKeySize)
	}
	return marshalLine(PrivateKeyType, k.Key.Seed(), k.Comment), nil
}

func marshalLine(typ string, key []byte, comment string) []byte {
	line := typ + " " + base64.StdEncoding.EncodeToString(key)
	if c := cleanComment(comment); c != "" {
		line += " " + c
	}
	return []byte(line + "\n")
}

// cleanComment makes comment fit on the key line: whitespace runs become
// one space and other control characters are dropped.
func cleanComment(comment string) string {
	comment = strings.ToValidUTF8(comment, "")
	comment = strings.Join(strings.Fields(comment), " ")
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) && r != ' ' {
			return -1
		}
		return r
	}, comment)
}

// ParsePublicKey parses the contents of a public key file.
func ParsePublicKey(data []byte) (PublicKey, error) {
	key, comment, err := parseLine(data, PublicKeyType, PrivateKeyType, ed25519.PublicKeySize)
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKey{Key: ed25519.PublicKey(key), Comment: comment}, nil
}

// ParsePrivateKey parses the contents of a private key file.
func ParsePrivateKey(data []byte) (PrivateKey, error) {
	seed, comment, err := parseLine(data, PrivateKeyType, PublicKeyType, ed25519.SeedSize)
	if err != nil {
		return PrivateKey{}, err
	}
	return PrivateKey{Key: ed25519.NewKeyFromSeed(seed), Comment: comment}, nil
}

// parseLine finds the one key line in data, checks its type and returns
// the decoded key bytes and the comment.
func parseLine(data []byte, want, other string, size int) ([]byte, string, error) {
	if len(data) > maxKeyFileSize {
		return nil, "", fmt.Errorf("%w: %d bytes is too big for a key file", ErrInvalidKey, len(data))
	}
	if !utf8.Valid(data) {
		return nil, "", fmt.Errorf("%w: not UTF-8 text", ErrInvalidKey)
	}
	var fields []string
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if fields != nil {
			return nil, "", fmt.Errorf("%w: more than one key line (line %d)", ErrInvalidKey, i+1)
		}
		fields = strings.Fields(line)
	}
	switch {
	case fields == nil:
		return nil, "", fmt.Errorf("%w: no %s line", ErrInvalidKey, want)
	case fields[0] == other:
		kind := "public"
		if other == PrivateKeyType {
			kind = "private"
		}
		return nil, "", fmt.Errorf("%w: this is a %s key (%s), not a %s line", ErrInvalidKey, kind, other, want)
	case fields[0] != want:
		return nil, "", fmt.Errorf("%w: line starts with %q, want %q", ErrInvalidKey, truncate(fields[0], 40), want)
	case len(fields) < 2:
		return nil, "", fmt.Errorf("%w: %s line has no key", ErrInvalidKey, want)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(fields[1])
	if err != nil {
		return nil, "", fmt.Errorf("%w: key is not valid base64: %v", ErrInvalidKey, err)
	}
	if len(key) != size {
		return nil, "", fmt.Errorf("%w: key is %d bytes, want %d", ErrInvalidKey, len(key), size)
	}
	return key, cleanComment(strings.Join(fields[2:], " ")), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}

// LoadPrivateKey reads a private key file. It refuses a file that group
// or others can access (any of the mode bits 0077), with an error that
// wraps ErrKeyPermissions and says to chmod 600 it.
func LoadPrivateKey(path string) (PrivateKey, error) {
	data, mode, err := readKeyFile(path, "private")
	if err != nil {
		return PrivateKey{}, err
	}
	if perm := mode.Perm(); perm&0o077 != 0 {
		return PrivateKey{}, fmt.Errorf("private key %s: %w: mode %04o lets group or others access it; run chmod 600 %s", path, ErrKeyPermissions, perm, path)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("private key %s: %w", path, err)
	}
	k.Source = path
	return k, nil
}

// LoadPublicKey reads a public key file. It refuses a file anyone may
// write (mode bit 0002): whoever can change it decides what is trusted.
func LoadPublicKey(path string) (PublicKey, error) {
	data, mode, err := readKeyFile(path, "public")
	if err != nil {
		return PublicKey{}, err
	}
	if perm := mode.Perm(); perm&0o002 != 0 {
		return PublicKey{}, fmt.Errorf("public key %s: %w: mode %04o lets anyone write it; run chmod o-w %s", path, ErrKeyPermissions, perm, path)
	}
	k, err := ParsePublicKey(data)
	if err != nil {
		return PublicKey{}, fmt.Errorf("public key %s: %w", path, err)
	}
	k.Source = path
	return k, nil
}

// readKeyFile reads a small regular file and returns its mode. It opens
// without blocking so that a FIFO in place of a key cannot hang the
// caller, and checks the opened file, not the path.
func readKeyFile(path, kind string) ([]byte, fs.FileMode, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("%s key: %w", kind, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("%s key: %w", kind, err)
	}
	switch {
	case st.IsDir():
		return nil, 0, fmt.Errorf("%s key %s: %w: is a directory", kind, path, ErrInvalidKey)
	case !st.Mode().IsRegular():
		return nil, 0, fmt.Errorf("%s key %s: %w: not a regular file (%v)", kind, path, ErrInvalidKey, st.Mode().Type())
	case st.Size() > maxKeyFileSize:
		return nil, 0, fmt.Errorf("%s key %s: %w: %d bytes is too big for a key file", kind, path, ErrInvalidKey, st.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, 0, fmt.Errorf("%s key %s: %w", kind, path, err)
	}
	return data, st.Mode(), nil
}

// WriteKeyFiles writes k to name+".key" (mode 0600) and its public half
// to name+".pub" (mode 0644). It never overwrites: if either file exists
// it fails with ErrKeyExists and writes nothing.
func WriteKeyFiles(name string, k PrivateKey) (keyPath, pubPath string, err error) {
	if name == "" {
		return "", "", errors.New("key file name is empty")
	}
	priv, err := MarshalPrivateKey(k)
	if err != nil {
		return "", "", err
	}
	pub, err := MarshalPublicKey(k.Public())
	if err != nil {
		return "", "", err
	}
	keyPath, pubPath = name+PrivateKeySuffix, name+PublicKeySuffix
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("%s: %w; choose another name or remove it first", p, ErrKeyExists)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", err
		}
	}
	if err := writeNew(keyPath, priv, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(pubPath, pub, 0o644); err != nil {
		os.Remove(keyPath)
		return "", "", err
	}
	return keyPath, pubPath, nil
}

// writeNew creates path, which must not exist, with data and mode.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrKeyExists)
		}
		return err
	}
	// The umask can only have removed bits; make the mode exact.
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// equalKey reports whether k is a usable public key with key id id.
func equalKey(k PublicKey, id []byte) bool {
	if len(k.Key) != ed25519.PublicKeySize {
		return false
	}
	kid := k.ID()
	return bytes.Equal(kid[:], id)
}
