package trust_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/hotpatch/hotpatch/patchfile"
	"github.com/hotpatch/hotpatch/trust"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t, "release key")
	keyPath, pubPath, err := trust.WriteKeyFiles(filepath.Join(dir, "release"), k)
	if err != nil {
		t.Fatal(err)
	}
	if keyPath != filepath.Join(dir, "release.key") || pubPath != filepath.Join(dir, "release.pub") {
		t.Errorf("paths = %s, %s", keyPath, pubPath)
	}
	for path, want := range map[string]fs.FileMode{keyPath: 0o600, pubPath: 0o644} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
	pubText, _ := os.ReadFile(pubPath)
	if !strings.HasPrefix(string(pubText), "hotpatch-ed25519-public ") || !strings.HasSuffix(string(pubText), " release key\n") {
		t.Errorf("public key file = %q", pubText)
	}

	priv, err := trust.LoadPrivateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := trust.LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Key.Equal(k.Key) || !pub.Key.Equal(k.Public().Key) {
		t.Fatal("keys read back differ from the keys written")
	}
	if pub.Source != pubPath || priv.Source != keyPath || pub.Comment != "release key" {
		t.Errorf("source/comment: %+v / %q %q", pub.Source, priv.Source, pub.Comment)
	}

	fp := pub.Fingerprint()
	id := sha256.Sum256(pub.Key)
	if want := fmt.Sprintf("SHA256:%x", id); fp != want || trust.Fingerprint(pub.Key) != want {
		t.Errorf("fingerprint = %s, want %s", fp, want)
	}

	raw := unsignedImage(t)
	out, err := trust.Sign(raw, priv)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(raw) {
		t.Fatalf("signing changed the size: %d -> %d", len(raw), len(out))
	}
	spec, err := patchfile.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	slot := spec.SignatureSlot
	for i := range raw {
		if raw[i] != out[i] && (i < slot.Off || i >= slot.Off+slot.Len) {
			t.Fatalf("signing changed byte %#x outside the slot", i)
		}
	}
	if spec.Signature == nil || !bytes.Equal(spec.Signature.KeyID, id[:]) {
		t.Fatalf("slot key id = %+v, want %x", spec.Signature, id)
	}
	got, err := trust.Verify(spec, []trust.PublicKey{pub})
	if err != nil || got != fp {
		t.Fatalf("Verify = %q, %v; want %q", got, err, fp)
	}
	if s, got, err := trust.VerifyImage(out, []trust.PublicKey{pub}); err != nil || s == nil || got != fp {
		t.Fatalf("VerifyImage = %v, %q, %v", s, got, err)
	}
	if k, ok := trust.FindKey([]trust.PublicKey{pub}, fp); !ok || k.Source != pubPath {
		t.Errorf("FindKey(%s) = %+v, %v", fp, k, ok)
	}

	// ed25519 is deterministic: signing again with the same key gives the
	// same bytes, and signing with another key replaces the signature.
	again, err := trust.Sign(out, priv)
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("re-signing with the same key: %v, equal=%v", err, bytes.Equal(again, out))
	}
	other := newKey(t, "other")
	resigned, err := trust.Sign(out, other)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(patchfile.SignedMessage(resigned, slot), patchfile.SignedMessage(raw, slot)) {
		t.Error("re-signing changed bytes outside the slot")
	}
	spec2, err := patchfile.Load(resigned)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Verify(spec2, []trust.PublicKey{pub}); !errors.Is(err, trust.ErrUntrustedKey) {
		t.Errorf("re-signed image verified with the old key: %v", err)
	}
	if got, err := trust.Verify(spec2, []trust.PublicKey{pub, other.Public()}); err != nil || got != other.Public().Fingerprint() {
		t.Errorf("re-signed image with the new key: %q, %v", got, err)
	}
}

func TestUnsigned(t *testing.T) {
	spec, err := patchfile.Load(unsignedImage(t))
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t, "")
	fp, err := trust.Verify(spec, []trust.PublicKey{k.Public()})
	if !errors.Is(err, trust.ErrUnsigned) || fp != "" {
		t.Fatalf("Verify(unsigned) = %q, %v; want ErrUnsigned", fp, err)
	}
	var ve *trust.VerifyError
	if !errors.As(err, &ve) || ve.Fingerprint != "" || ve.Err != trust.ErrUnsigned {
		t.Fatalf("error %#v is not a VerifyError for an unsigned image", err)
	}
	if !strings.Contains(err.Error(), "not signed") {
		t.Errorf("message %q does not say the patch is not signed", err)
	}
	if errors.Is(err, trust.ErrBadSignature) || errors.Is(err, trust.ErrUntrustedKey) {
		t.Errorf("unsigned error matches another sentinel: %v", err)
	}
	if _, err := trust.Verify(spec, nil); !errors.Is(err, trust.ErrUnsigned) {
		t.Errorf("Verify(unsigned, no keys) = %v", err)
	}
}

func TestWrongKey(t *testing.T) {
	a, b := newKey(t, "a"), newKey(t, "b")
	spec, err := patchfile.Load(signed(t, a))
	if err != nil {
		t.Fatal(err)
	}
	fp, err := trust.Verify(spec, []trust.PublicKey{b.Public()})
	if !errors.Is(err, trust.ErrUntrustedKey) || fp != "" {
		t.Fatalf("signed by A, trusting B: %q, %v; want ErrUntrustedKey", fp, err)
	}
	var ve *trust.VerifyError
	if !errors.As(err, &ve) || ve.Fingerprint != a.Public().Fingerprint() {
		t.Fatalf("VerifyError = %#v, want fingerprint %s", err, a.Public().Fingerprint())
	}
	if !strings.Contains(err.Error(), a.Public().Fingerprint()) || strings.Contains(err.Error(), b.Public().Fingerprint()) {
		t.Errorf("message %q should name A's fingerprint only", err)
	}
	if _, err := trust.Verify(spec, nil); !errors.Is(err, trust.ErrUntrustedKey) {
		t.Errorf("no trusted keys: %v", err)
	}
	// A malformed entry in keys is skipped, not a panic.
	bad := []trust.PublicKey{{Key: ed25519.PublicKey{1, 2, 3}}, b.Public(), a.Public()}
	if got, err := trust.Verify(spec, bad); err != nil || got != a.Public().Fingerprint() {
		t.Errorf("trusting B and A: %q, %v", got, err)
	}
}

// TestEveryByteFlipIsRejected flips every byte of signed images, with two
// different masks, and checks that no result is accepted: either Load
// rejects the structure or Verify rejects the signature. It also checks
// which error each part of the signature slot gives.
func TestEveryByteFlipIsRejected(t *testing.T) {
	for _, name := range []string{"compute_v2", "import"} {
		t.Run(name, func(t *testing.T) { testEveryByteFlip(t, name) })
	}
}

func testEveryByteFlip(t *testing.T, fixtureName string) {
	k := newKey(t, "")
	keys := []trust.PublicKey{k.Public()}
	img := signedFixture(t, fixtureName, k)
	spec, err := patchfile.Load(img)
	if err != nil {
		t.Fatal(err)
	}
	slot := spec.SignatureSlot

	// Name every byte by the structure that holds it, so the summary shows
	// that all sections, the headers and the slot were covered.
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	owner := make([]string, len(img))
	for i := range owner {
		owner[i] = "unreferenced"
	}
	mark := func(off, n uint64, name string) {
		for i := off; i < off+n && i < uint64(len(owner)); i++ {
			owner[i] = name
		}
	}
	shoff := binary.LittleEndian.Uint64(img[0x28:])
	mark(shoff, uint64(len(f.Sections))*64, "section headers")
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS && s.Type != elf.SHT_NULL {
			mark(s.Offset, s.FileSize, s.Name)
		}
	}
	mark(0, 64, "ELF header")
	wantSections := []string{".text", ".rela", ".symtab", ".strtab", ".shstrtab", ".hotpatch.meta", ".hotpatch.sig", "section headers", "ELF header"}
	if fixtureName == "import" {
		wantSections = append(wantSections, ".rela.text")
	}
	for _, want := range wantSections {
		found := false
		for _, o := range owner {
			found = found || o == want || (want == ".rela" && strings.HasPrefix(o, ".rela"))
		}
		if !found {
			t.Errorf("the fixture image has no %s; the test would not cover it", want)
		}
	}

	type tally struct{ load, untrusted, bad int }
	counts := map[string]*tally{}
	for pos := range img {
		for _, mask := range []byte{0xff, 0x01} {
			mod := bytes.Clone(img)
			mod[pos] ^= mask
			c := counts[owner[pos]]
			if c == nil {
				c = &tally{}
				counts[owner[pos]] = c
			}
			s, err := patchfile.Load(mod)
			if err != nil {
				c.load++
				continue
			}
			fp, err := trust.Verify(s, keys)
			var ve *trust.VerifyError
			switch {
			case err == nil:
				t.Fatalf("flipping byte %#x (%s) with %#02x still verifies (fingerprint %s)", pos, owner[pos], mask, fp)
			case !errors.As(err, &ve):
				t.Fatalf("byte %#x: error is not a *VerifyError: %v", pos, err)
			case errors.Is(err, trust.ErrUntrustedKey):
				c.untrusted++
			case errors.Is(err, trust.ErrBadSignature):
				c.bad++
			default:
				t.Fatalf("byte %#x (%s): unexpected error %v", pos, owner[pos], err)
			}

			// Inside the slot the outcome is fixed by the field hit.
			if rel := pos - slot.Off; rel >= 0 && rel < slot.Len {
				switch {
				case rel >= 16 && rel < 48 && !errors.Is(err, trust.ErrUntrustedKey):
					t.Errorf("flipping key id byte %d: %v, want ErrUntrustedKey", rel, err)
				case rel >= 48 && rel < 112 && !errors.Is(err, trust.ErrBadSignature):
					t.Errorf("flipping signature byte %d: %v, want ErrBadSignature", rel, err)
				case (rel < 16 || rel >= 112):
					t.Errorf("flipping slot header/reserved byte %d loaded; want a malformed slot", rel)
				}
			}
			// Outside the slot the key id is intact, so the trusted key is
			// found and the signature must fail.
			if (pos < slot.Off || pos >= slot.Off+slot.Len) && !errors.Is(err, trust.ErrBadSignature) {
				t.Errorf("flipping byte %#x (%s): %v, want ErrBadSignature", pos, owner[pos], err)
			}
		}
	}
	var names []string
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := counts[n]
		t.Logf("%-20s rejected by Load %4d, untrusted key %3d, bad signature %4d", n, c.load, c.untrusted, c.bad)
	}
	t.Logf("%d bytes x 2 masks = %d flipped images, all rejected", len(img), 2*len(img))
}

// TestHeaderFlipsAllBits flips every single bit of the ELF header.
func TestHeaderFlipsAllBits(t *testing.T) {
	k := newKey(t, "")
	img := signed(t, k)
	for pos := 0; pos < 64; pos++ {
		for bit := 0; bit < 8; bit++ {
			mod := bytes.Clone(img)
			mod[pos] ^= 1 << bit
			if _, _, err := trust.VerifyImage(mod, []trust.PublicKey{k.Public()}); err == nil {
				t.Errorf("flipping bit %d of ELF header byte %d still verifies", bit, pos)
			}
		}
	}
}

func TestSpecSignatureMustMatchBytes(t *testing.T) {
	k := newKey(t, "")
	spec, err := patchfile.Load(signed(t, k))
	if err != nil {
		t.Fatal(err)
	}
	keys := []trust.PublicKey{k.Public()}
	forged := *spec
	sig := *spec.Signature
	sig.Value = bytes.Repeat([]byte{1}, 64)
	forged.Signature = &sig
	if _, err := trust.Verify(&forged, keys); !errors.Is(err, trust.ErrBadSignature) {
		t.Errorf("Spec.Signature differing from the slot bytes: %v", err)
	}
	forged = *spec
	forged.Signature = nil
	if _, err := trust.Verify(&forged, keys); !errors.Is(err, trust.ErrBadSignature) {
		t.Errorf("Spec.Signature nil over a filled slot: %v", err)
	}
	forged = *spec
	forged.SignatureSlot.Off = len(spec.Raw)
	if _, err := trust.Verify(&forged, keys); !errors.Is(err, trust.ErrBadSignature) {
		t.Errorf("slot outside the image: %v", err)
	}
	if _, err := trust.Verify(nil, keys); err == nil {
		t.Error("Verify(nil) succeeded")
	}
}

func TestSignErrors(t *testing.T) {
	raw := unsignedImage(t)
	if _, err := trust.Sign(raw, trust.PrivateKey{}); !errors.Is(err, trust.ErrInvalidKey) {
		t.Errorf("Sign with an empty key: %v", err)
	}
	k := newKey(t, "")
	if _, err := trust.Sign(raw[:len(raw)/2], k); !errors.Is(err, patchfile.ErrMalformed) {
		t.Errorf("Sign of a truncated image: %v", err)
	}
	if _, err := trust.Sign([]byte("not an image"), k); err == nil {
		t.Error("Sign of garbage succeeded")
	}
}

func TestTrustDir(t *testing.T) {
	a, b := newKey(t, "a"), newKey(t, "b")
	spec, err := patchfile.Load(signed(t, a))
	if err != nil {
		t.Fatal(err)
	}

	missing := filepath.Join(t.TempDir(), "no", "trusted.d")
	keys, err := trust.LoadTrustDir(missing)
	if err != nil || keys != nil {
		t.Fatalf("missing trust directory: %v, %v; want no keys and no error", keys, err)
	}
	if trust.TrustDirExists(missing) {
		t.Error("TrustDirExists(missing) = true")
	}
	if _, err := trust.Verify(spec, keys); !errors.Is(err, trust.ErrUntrustedKey) {
		t.Errorf("verify with a missing trust directory: %v", err)
	}

	dir := t.TempDir()
	for name, k := range map[string]trust.PrivateKey{"a": a, "b": b} {
		if _, _, err := trust.WriteKeyFiles(filepath.Join(dir, name), k); err != nil {
			t.Fatal(err)
		}
	}
	// Ignored: private keys, other names, hidden files, and a nested
	// directory not named *.pub.
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".swap.pub"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	keys, err = trust.LoadTrustDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Comment != "a" || keys[1].Comment != "b" || keys[0].Source != filepath.Join(dir, "a.pub") {
		t.Fatalf("keys = %+v", keys)
	}
	if fp, err := trust.Verify(spec, keys); err != nil || fp != a.Public().Fingerprint() {
		t.Errorf("verify with the trust directory: %q, %v", fp, err)
	}

	t.Setenv(trust.TrustDirEnv, dir)
	if got := trust.DefaultTrustDir(); got != dir {
		t.Errorf("DefaultTrustDir with %s set = %s", trust.TrustDirEnv, got)
	}
	t.Setenv(trust.TrustDirEnv, "")
	if got := trust.DefaultTrustDir(); got != "/etc/hotpatch/trusted.d" {
		t.Errorf("DefaultTrustDir = %s", got)
	}

	// A broken .pub fails the whole load and names the file.
	broken := filepath.Join(dir, "c.pub")
	if err := os.WriteFile(broken, []byte("hotpatch-ed25519-public !!!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadTrustDir(dir); !errors.Is(err, trust.ErrInvalidKey) || !strings.Contains(err.Error(), broken) {
		t.Errorf("broken key in the trust directory: %v", err)
	}
	os.Remove(broken)

	// A directory called *.pub is not a key.
	if err := os.Mkdir(filepath.Join(dir, "d.pub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadTrustDir(dir); !errors.Is(err, trust.ErrInvalidKey) {
		t.Errorf("directory named d.pub: %v", err)
	}
	os.Remove(filepath.Join(dir, "d.pub"))

	// Anyone-writable directory or key file.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadTrustDir(dir); !errors.Is(err, trust.ErrKeyPermissions) {
		t.Errorf("world-writable trust directory: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "b.pub"), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadTrustDir(dir); !errors.Is(err, trust.ErrKeyPermissions) {
		t.Errorf("world-writable key file: %v", err)
	}

	// A file where the directory should be.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadTrustDir(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("trust directory is a file: %v", err)
	}
}

func TestLoadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t, "")
	keyPath, pubPath, err := trust.WriteKeyFiles(filepath.Join(dir, "k"), k)
	if err != nil {
		t.Fatal(err)
	}

	// Nonexistent files.
	if _, err := trust.LoadPrivateKey(filepath.Join(dir, "nope.key")); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nope.key") {
		t.Errorf("missing private key: %v", err)
	}
	if _, err := trust.LoadPublicKey(filepath.Join(dir, "nope.pub")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing public key: %v", err)
	}
	// Directories.
	if _, err := trust.LoadPrivateKey(dir); !errors.Is(err, trust.ErrInvalidKey) || !strings.Contains(err.Error(), "directory") {
		t.Errorf("directory as private key: %v", err)
	}
	if _, err := trust.LoadPublicKey(dir); !errors.Is(err, trust.ErrInvalidKey) {
		t.Errorf("directory as public key: %v", err)
	}
	// A FIFO must not block.
	fifo := filepath.Join(dir, "fifo.key")
	if err := syscall.Mkfifo(fifo, 0o600); err == nil {
		if _, err := trust.LoadPrivateKey(fifo); !errors.Is(err, trust.ErrInvalidKey) {
			t.Errorf("FIFO as private key: %v", err)
		}
	}
	// The halves swapped.
	if _, err := trust.LoadPrivateKey(pubPath); err == nil {
		t.Error("public key loaded as a private key")
	} else if !errors.Is(err, trust.ErrKeyPermissions) {
		t.Errorf("public key (0644) as private key: %v", err)
	}
	if err := os.Chmod(pubPath, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadPrivateKey(pubPath); !errors.Is(err, trust.ErrInvalidKey) || !strings.Contains(err.Error(), "public key") {
		t.Errorf("public key file as private key: %v", err)
	}
	if _, err := trust.LoadPublicKey(keyPath); !errors.Is(err, trust.ErrInvalidKey) || !strings.Contains(err.Error(), "private key") {
		t.Errorf("private key file as public key: %v", err)
	}

	// Permissions: anything for group or others is refused.
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o660, 0o601, 0o610} {
		if err := os.Chmod(keyPath, mode); err != nil {
			t.Fatal(err)
		}
		_, err := trust.LoadPrivateKey(keyPath)
		if !errors.Is(err, trust.ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600 "+keyPath) {
			t.Errorf("private key with mode %04o: %v", mode, err)
		}
	}
	for _, mode := range []fs.FileMode{0o600, 0o400} {
		if err := os.Chmod(keyPath, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := trust.LoadPrivateKey(keyPath); err != nil {
			t.Errorf("private key with mode %04o: %v", mode, err)
		}
	}
}

func TestWriteKeyFilesRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "k")
	k1, k2 := newKey(t, "one"), newKey(t, "two")
	if _, _, err := trust.WriteKeyFiles(name, k1); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(name + ".key")
	if _, _, err := trust.WriteKeyFiles(name, k2); !errors.Is(err, trust.ErrKeyExists) || !strings.Contains(err.Error(), name+".key") {
		t.Errorf("second WriteKeyFiles: %v", err)
	}
	if after, _ := os.ReadFile(name + ".key"); !bytes.Equal(before, after) {
		t.Error("the existing private key was overwritten")
	}

	// Only the .pub exists: nothing is written.
	other := filepath.Join(dir, "half")
	if err := os.WriteFile(other+".pub", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := trust.WriteKeyFiles(other, k2); !errors.Is(err, trust.ErrKeyExists) {
		t.Errorf("WriteKeyFiles over an existing .pub: %v", err)
	}
	if _, err := os.Stat(other + ".key"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a .key was left behind: %v", err)
	}
	// A dangling symlink counts as existing.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "elsewhere"), link+".key"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := trust.WriteKeyFiles(link, k2); !errors.Is(err, trust.ErrKeyExists) {
		t.Errorf("WriteKeyFiles over a dangling symlink: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "elsewhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("WriteKeyFiles followed a symlink")
	}
	if _, _, err := trust.WriteKeyFiles("", k2); err == nil {
		t.Error("WriteKeyFiles with an empty name succeeded")
	}
	if _, _, err := trust.WriteKeyFiles(filepath.Join(dir, "empty"), trust.PrivateKey{}); !errors.Is(err, trust.ErrInvalidKey) {
		t.Errorf("WriteKeyFiles with an empty key: %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	k := newKey(t, "ci signer")
	pubText, err := trust.MarshalPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	privText, err := trust.MarshalPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	b64 := strings.Fields(string(pubText))[1]

	good := map[string]string{
		"plain":                 "hotpatch-ed25519-public " + b64 + "\n",
		"no newline":            "hotpatch-ed25519-public " + b64,
		"comment with spaces":   "hotpatch-ed25519-public " + b64 + " ci   signer\n",
		"comments/blank lines":  "# trusted since 2024\n\n  hotpatch-ed25519-public " + b64 + "  \n\n",
		"CRLF":                  "hotpatch-ed25519-public " + b64 + "\r\n",
		"tabs between fields":   "hotpatch-ed25519-public\t" + b64 + "\tx\n",
		"marshalled with cmnt":  string(pubText),
		"comment with controls": "hotpatch-ed25519-public " + b64 + " a\x1bb\n",
	}
	for name, text := range good {
		got, err := trust.ParsePublicKey([]byte(text))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !got.Key.Equal(k.Public().Key) {
			t.Errorf("%s: wrong key", name)
		}
		if strings.ContainsAny(got.Comment, "\x1b\r\n\t") {
			t.Errorf("%s: comment %q keeps control characters", name, got.Comment)
		}
	}
	if got, _ := trust.ParsePublicKey(pubText); got.Comment != "ci signer" {
		t.Errorf("comment = %q", got.Comment)
	}
	if got, err := trust.ParsePrivateKey(privText); err != nil || !got.Key.Equal(k.Key) {
		t.Errorf("private key round trip: %v", err)
	}

	bad := map[string]string{
		"empty":         "",
		"only comments": "# nothing\n",
		"no key":        "hotpatch-ed25519-public\n",
		"wrong type":    "ssh-ed25519 " + b64 + "\n",
		"private line":  string(privText),
		"two keys":      "hotpatch-ed25519-public " + b64 + "\nhotpatch-ed25519-public " + b64 + "\n",
		"bad base64":    "hotpatch-ed25519-public " + b64[:len(b64)-2] + "!!\n",
		"unpadded":      "hotpatch-ed25519-public " + strings.TrimRight(b64, "=") + "\n",
		"url base64":    "hotpatch-ed25519-public " + strings.NewReplacer("+", "-", "/", "_").Replace(b64) + "\n",
		"short key":     "hotpatch-ed25519-public AAAA\n",
		"long key":      "hotpatch-ed25519-public " + strings.Repeat("A", 48) + "\n",
		"not utf-8":     "hotpatch-ed25519-public " + b64 + " \xff\n",
		"huge":          strings.Repeat("#", 20000) + "\nhotpatch-ed25519-public " + b64 + "\n",
	}
	for name, text := range bad {
		if strings.Contains(b64, "+") || strings.Contains(b64, "/") || name != "url base64" {
			if _, err := trust.ParsePublicKey([]byte(text)); !errors.Is(err, trust.ErrInvalidKey) {
				t.Errorf("%s: ParsePublicKey = %v, want ErrInvalidKey", name, err)
			}
		}
	}
	if _, err := trust.ParsePrivateKey(pubText); !errors.Is(err, trust.ErrInvalidKey) || !strings.Contains(err.Error(), "public key") {
		t.Errorf("ParsePrivateKey(public) = %v", err)
	}
	if _, err := trust.MarshalPublicKey(trust.PublicKey{}); !errors.Is(err, trust.ErrInvalidKey) {
		t.Errorf("MarshalPublicKey(empty) = %v", err)
	}
}

func TestVerifyErrorIs(t *testing.T) {
	err := error(&trust.VerifyError{Reason: "patch is signed by an untrusted key", Fingerprint: "SHA256:ab", Err: trust.ErrUntrustedKey})
	wrapped := fmt.Errorf("x.hp: %w", err)
	if !errors.Is(wrapped, trust.ErrUntrustedKey) || errors.Is(wrapped, trust.ErrBadSignature) || errors.Is(wrapped, trust.ErrUnsigned) {
		t.Error("errors.Is does not follow VerifyError.Err")
	}
	if got := err.Error(); got != "patch is signed by an untrusted key (key SHA256:ab)" {
		t.Errorf("Error() = %q", got)
	}
	if (&trust.VerifyError{}).Is(nil) {
		t.Error("an empty VerifyError matches nil")
	}
}
