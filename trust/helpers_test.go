package trust_test

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patchfile"
	"github.com/hotpatch/hotpatch/target"
	"github.com/hotpatch/hotpatch/trust"
)

// The fixture patch images, built once per test binary from the basic
// fixture: target.c (gcc -O2 -g -pthread) patched with compute_v2.c
// (compute=compute_v2) and with import.c (compute=compute_import), both
// compiled with gcc -c -O2 -fPIC. The second calls into libc, so its
// .text has relocations.
var (
	imagesOnce sync.Once
	images     map[string][]byte
	imagesErr  string
)

// unsignedImage returns a fresh copy of the compute_v2 fixture image.
func unsignedImage(tb testing.TB) []byte {
	tb.Helper()
	return fixtureImage(tb, "compute_v2")
}

// fixtureImage returns a fresh copy of the named fixture image
// ("compute_v2" or "import"). It skips the test when gcc is missing.
func fixtureImage(tb testing.TB, name string) []byte {
	tb.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		tb.Skip("gcc not found in PATH; these tests sign and verify patch images built from real gcc objects")
	}
	imagesOnce.Do(func() {
		imagesErr = "building the fixture images failed in an earlier test"
		dir, err := os.MkdirTemp("", "trust-test-")
		if err != nil {
			tb.Fatal(err)
		}
		defer os.RemoveAll(dir)
		src := fixture.Dir(tb, "basic")
		bin := filepath.Join(dir, "target")
		// A fixed build-id and target path make the images the same in
		// every process, which the fuzz tests' workers rely on.
		fixture.GCC(tb, "-O2", "-g", "-pthread", "-o", bin, filepath.Join(src, "target.c"),
			"-Wl,--build-id=0x7472757374746573747472757374746573740001")
		images = map[string][]byte{}
		for name, repl := range map[string]string{"compute_v2": "compute=compute_v2", "import": "compute=compute_import"} {
			obj := filepath.Join(dir, name+".o")
			fixture.GCC(tb, "-c", "-O2", "-fPIC", "-o", obj, filepath.Join(src, name+".c"))
			meta, err := target.PatchMetadata(bin, "trust-"+name, []string{repl})
			if err != nil {
				tb.Fatalf("patch metadata: %v", err)
			}
			meta.TargetPath = "/opt/trust-test/target"
			code, err := os.ReadFile(obj)
			if err != nil {
				tb.Fatal(err)
			}
			if images[name], err = patchfile.Pack(code, meta); err != nil {
				tb.Fatalf("pack: %v", err)
			}
		}
		imagesErr = ""
	})
	if imagesErr != "" {
		tb.Fatal(imagesErr)
	}
	raw, ok := images[name]
	if !ok {
		tb.Fatalf("no fixture image %q", name)
	}
	return append([]byte(nil), raw...)
}

// newKey generates a key pair in memory.
func newKey(tb testing.TB, comment string) trust.PrivateKey {
	tb.Helper()
	k, err := trust.GenerateKey(rand.Reader, comment)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// signed returns the compute_v2 fixture image signed with k.
func signed(tb testing.TB, k trust.PrivateKey) []byte {
	tb.Helper()
	return signedFixture(tb, "compute_v2", k)
}

// signedFixture returns the named fixture image signed with k.
func signedFixture(tb testing.TB, name string, k trust.PrivateKey) []byte {
	tb.Helper()
	out, err := trust.Sign(fixtureImage(tb, name), k)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return out
}
