package trust_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/patchfile"
	"github.com/hotpatch/hotpatch/trust"
)

// fuzzKey is a fixed key so that fuzz inputs stay meaningful between runs.
var fuzzKey = trust.PrivateKey{Key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))}

// FuzzParsePublicKey feeds arbitrary key files to both parsers. They must
// not panic, must classify every failure as ErrInvalidKey, and whatever
// they accept must survive a marshal/parse round trip unchanged.
func FuzzParsePublicKey(f *testing.F) {
	pub, _ := trust.MarshalPublicKey(fuzzKey.Public())
	priv, _ := trust.MarshalPrivateKey(fuzzKey)
	for _, s := range []string{
		string(pub), string(priv), "", "#\n", "hotpatch-ed25519-public",
		"hotpatch-ed25519-public AAAA", "hotpatch-ed25519-public " + strings.Repeat("A", 43) + "= c\n",
		string(pub) + string(pub), "\xff\xfe", "hotpatch-ed25519-private " + strings.Repeat("/", 43) + "=\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if k, err := trust.ParsePublicKey(data); err != nil {
			if !errors.Is(err, trust.ErrInvalidKey) {
				t.Fatalf("unclassified error: %v", err)
			}
		} else {
			if len(k.Key) != ed25519.PublicKeySize {
				t.Fatalf("accepted a %d-byte public key", len(k.Key))
			}
			out, err := trust.MarshalPublicKey(k)
			if err != nil {
				t.Fatal(err)
			}
			back, err := trust.ParsePublicKey(out)
			if err != nil || !back.Key.Equal(k.Key) || back.Comment != k.Comment {
				t.Fatalf("round trip of %q: %q, %v", out, back.Comment, err)
			}
			_ = k.Fingerprint()
		}
		if k, err := trust.ParsePrivateKey(data); err != nil {
			if !errors.Is(err, trust.ErrInvalidKey) {
				t.Fatalf("unclassified error: %v", err)
			}
		} else {
			out, err := trust.MarshalPrivateKey(k)
			if err != nil {
				t.Fatal(err)
			}
			back, err := trust.ParsePrivateKey(out)
			if err != nil || !back.Key.Equal(k.Key) {
				t.Fatalf("round trip of a private key: %v", err)
			}
		}
	})
}

// fuzzImageSeeds returns a signed and an unsigned fixture image when gcc
// is available.
func fuzzImageSeeds(f *testing.F) (signedImg, unsignedImg []byte) {
	if _, err := exec.LookPath("gcc"); err != nil {
		return nil, nil
	}
	return signed(f, fuzzKey), unsignedImage(f)
}

// FuzzVerify loads and verifies arbitrary files. Nothing may panic, and
// an image may only be accepted if its signed message is exactly that of
// the image the fuzz key signed: the fuzzer must not find a way to change
// a covered byte and keep a valid signature.
func FuzzVerify(f *testing.F) {
	signedImg, unsignedImg := fuzzImageSeeds(f)
	if signedImg != nil {
		f.Add(signedImg)
		f.Add(unsignedImg)
	}
	f.Add([]byte{})
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	keys := []trust.PublicKey{fuzzKey.Public()}
	var wantMsg []byte
	if signedImg != nil {
		spec, err := patchfile.Load(signedImg)
		if err != nil {
			f.Fatal(err)
		}
		wantMsg = patchfile.SignedMessage(signedImg, spec.SignatureSlot)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, fp, err := trust.VerifyImage(data, keys)
		if err != nil {
			if spec != nil || fp != "" {
				t.Fatalf("failed verify returned a spec or fingerprint: %v", err)
			}
			return
		}
		if fp != fuzzKey.Public().Fingerprint() {
			t.Fatalf("accepted with fingerprint %s", fp)
		}
		if got := patchfile.SignedMessage(data, spec.SignatureSlot); !bytes.Equal(got, wantMsg) {
			t.Fatalf("accepted an image whose covered bytes differ from the signed one")
		}
	})
}

// FuzzDecodeSignature writes arbitrary bytes into the signature slot of a
// signed image. Verify must not panic, and must accept only the original
// slot: ed25519 signatures as checked by crypto/ed25519 are not malleable.
func FuzzDecodeSignature(f *testing.F) {
	signedImg, _ := fuzzImageSeeds(f)
	if signedImg == nil {
		f.Skip("gcc not found in PATH; this fuzz test needs a patch image built from a real gcc object")
	}
	spec, err := patchfile.Load(signedImg)
	if err != nil {
		f.Fatal(err)
	}
	slot := spec.SignatureSlot
	orig := bytes.Clone(signedImg[slot.Off : slot.Off+slot.Len])
	f.Add(orig)
	f.Add(make([]byte, slot.Len))
	other, _ := patchfile.EncodeSignature(patchfile.Signature{Algorithm: "ed25519", KeyID: orig[16:48], Value: make([]byte, 64)})
	f.Add(other)
	keys := []trust.PublicKey{fuzzKey.Public()}
	f.Fuzz(func(t *testing.T, slotBytes []byte) {
		if _, err := patchfile.DecodeSignature(slotBytes); err != nil && len(slotBytes) == slot.Len &&
			!errors.Is(err, patchfile.ErrMalformed) && !errors.Is(err, patchfile.ErrUnsupportedVersion) {
			t.Fatalf("unclassified slot error: %v", err)
		}
		if len(slotBytes) != slot.Len {
			return
		}
		img := bytes.Clone(signedImg)
		copy(img[slot.Off:], slotBytes)
		s, err := patchfile.Load(img)
		if err != nil {
			return
		}
		_, err = trust.Verify(s, keys)
		if err == nil && !bytes.Equal(slotBytes, orig) {
			t.Fatalf("a different slot verified: % x", slotBytes)
		}
		if err != nil && bytes.Equal(slotBytes, orig) {
			t.Fatalf("the original slot does not verify: %v", err)
		}
		if err != nil && !errors.Is(err, trust.ErrUnsigned) && !errors.Is(err, trust.ErrUntrustedKey) && !errors.Is(err, trust.ErrBadSignature) {
			t.Fatalf("unclassified verify error: %v", err)
		}
	})
}
