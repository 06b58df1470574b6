package patchfile

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func testSignature() Signature {
	key := sha256.Sum256([]byte("public key"))
	value := bytes.Repeat([]byte{0xa5, 0x5a}, 32)
	return Signature{Algorithm: AlgorithmEd25519, KeyID: key[:], Value: value}
}

func TestEncodeDecodeSignature(t *testing.T) {
	sig := testSignature()
	enc, err := EncodeSignature(sig)
	if err != nil {
		t.Fatal(err)
	}
	if len(enc) != SignatureSlotSize || string(enc[:8]) != SignatureMagic {
		t.Fatalf("encoded slot = % x", enc)
	}
	got, err := DecodeSignature(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, sig) {
		t.Errorf("round trip: got %+v, want %+v", got, sig)
	}

	if got, err := DecodeSignature(make([]byte, SignatureSlotSize)); got != nil || err != nil {
		t.Errorf("DecodeSignature(zero) = %v, %v; want nil, nil", got, err)
	}

	for name, bad := range map[string]Signature{
		"algorithm": {Algorithm: "rsa", KeyID: sig.KeyID, Value: sig.Value},
		"key id":    {Algorithm: AlgorithmEd25519, KeyID: sig.KeyID[:31], Value: sig.Value},
		"value":     {Algorithm: AlgorithmEd25519, KeyID: sig.KeyID, Value: append(sig.Value, 0)},
	} {
		if _, err := EncodeSignature(bad); err == nil {
			t.Errorf("EncodeSignature with bad %s succeeded", name)
		}
	}

	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(enc)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		slot []byte
		want error
	}{
		{"short", enc[:100], ErrMalformed},
		{"magic", mod(func(b []byte) { b[0] = 'X' }), ErrMalformed},
		{"version", mod(func(b []byte) { b[8] = 2 }), ErrUnsupportedVersion},
		{"algorithm", mod(func(b []byte) { b[10] = 9 }), ErrMalformed},
		{"reserved head", mod(func(b []byte) { b[13] = 1 }), ErrMalformed},
		{"reserved tail", mod(func(b []byte) { b[127] = 1 }), ErrMalformed},
		{"stray byte", func() []byte { b := make([]byte, SignatureSlotSize); b[77] = 1; return b }(), ErrMalformed},
	} {
		if _, err := DecodeSignature(tc.slot); !errors.Is(err, tc.want) {
			t.Errorf("%s: DecodeSignature = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestWithSignature(t *testing.T) {
	imgs := map[string][]byte{
		"synthetic": mustPack(t, synthObject(elf.EM_AARCH64, 0), testMeta()),
	}
	if _, err := lookGCC(); err == nil {
		imgs["gcc"] = mustPack(t, compile(t, testSource, "-fPIC"), testMeta())
	}
	for name, img := range imgs {
		t.Run(name, func(t *testing.T) {
			before, err := Load(img)
			if err != nil {
				t.Fatal(err)
			}
			sig := testSignature()
			signed, err := WithSignature(img, sig)
			if err != nil {
				t.Fatal(err)
			}
			after, err := Load(signed)
			if err != nil {
				t.Fatalf("Load(signed): %v", err)
			}
			if after.Signature == nil || !reflect.DeepEqual(*after.Signature, sig) {
				t.Fatalf("signature after Load = %+v, want %+v", after.Signature, sig)
			}
			if after.SignatureSlot != before.SignatureSlot {
				t.Errorf("slot moved from %v to %v", before.SignatureSlot, after.SignatureSlot)
			}
			if len(signed) != len(img) {
				t.Fatalf("signing changed the size from %d to %d", len(img), len(signed))
			}
			slot := before.SignatureSlot
			for i := range img {
				inSlot := i >= slot.Off && i < slot.Off+slot.Len
				if !inSlot && img[i] != signed[i] {
					t.Fatalf("signing changed byte %#x outside the slot", i)
				}
			}
			msgBefore := SignedMessage(img, before.SignatureSlot)
			msgAfter := SignedMessage(signed, after.SignatureSlot)
			if !bytes.Equal(msgBefore, msgAfter) {
				t.Error("SignedMessage differs before and after signing")
			}
			if !bytes.Equal(msgBefore, img) {
				t.Error("SignedMessage of an unsigned image is not the image itself")
			}
			if bytes.Equal(msgAfter, signed) {
				t.Error("SignedMessage did not clear the slot")
			}

			// Every byte outside the slot is covered.
			for i := range signed {
				if i >= slot.Off && i < slot.Off+slot.Len {
					continue
				}
				flipped := bytes.Clone(signed)
				flipped[i] ^= 0x01
				if bytes.Equal(SignedMessage(flipped, slot), msgAfter) {
					t.Fatalf("flipping byte %#x does not change the signed message", i)
				}
			}
			// And no byte inside it.
			flipped := bytes.Clone(signed)
			flipped[slot.Off+20] ^= 0xff
			if !bytes.Equal(SignedMessage(flipped, slot), msgAfter) {
				t.Error("a byte inside the slot changes the signed message")
			}

			// Re-signing replaces the signature.
			sig2 := testSignature()
			sig2.Value = bytes.Repeat([]byte{7}, 64)
			resigned, err := WithSignature(signed, sig2)
			if err != nil {
				t.Fatal(err)
			}
			spec, err := Load(resigned)
			if err != nil || !bytes.Equal(spec.Signature.Value, sig2.Value) {
				t.Errorf("re-signing: %v %+v", err, spec)
			}
			if !bytes.Equal(SignedMessage(resigned, slot), msgBefore) {
				t.Error("re-signing changed the signed message")
			}
		})
	}
}

func TestWithSignatureErrors(t *testing.T) {
	img := mustPack(t, synthObject(elf.EM_X86_64, 0), testMeta())
	if _, err := WithSignature(img, Signature{Algorithm: "rsa"}); err == nil {
		t.Error("WithSignature accepted a bad signature")
	}
	if _, err := WithSignature(img[:len(img)-1], testSignature()); !errors.Is(err, ErrMalformed) {
		t.Errorf("WithSignature(truncated) = %v", err)
	}
	if _, err := WithSignature(synthObject(elf.EM_X86_64, 0), testSignature()); !errors.Is(err, ErrNotPatchImage) {
		t.Errorf("WithSignature(object) = %v", err)
	}
}

func TestSignedMessageOutOfRange(t *testing.T) {
	raw := []byte("0123456789")
	for _, r := range []Range{{-1, 3}, {8, 10}, {20, 5}, {2, -1}, {0, 0}, {1 << 62, 1 << 62}} {
		msg := SignedMessage(raw, r)
		if len(msg) != len(raw) {
			t.Errorf("%v: length %d", r, len(msg))
		}
	}
	if got := SignedMessage(raw, Range{8, 10}); string(got) != "01234567\x00\x00" {
		t.Errorf("clamped = %q", got)
	}
	if got := SignedMessage(nil, Range{0, 4}); got == nil || len(got) != 0 {
		t.Errorf("SignedMessage(nil) = %#v", got)
	}
	if !strings.Contains(string(SignedMessage(raw, Range{})), "0123") {
		t.Error("empty range changed the message")
	}
}
