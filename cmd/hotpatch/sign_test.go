package main

import (
	"bytes"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// signCLI runs the CLI (built by TestMain) for the signing tests, with
// HOTPATCH_TRUST_DIR set for every run.
type signCLI struct {
	trustDir string
}

func (c signCLI) env() []string { return []string{"HOTPATCH_TRUST_DIR=" + c.trustDir} }

func (c signCLI) run(t *testing.T, args ...string) result {
	t.Helper()
	return hotpatchEnv(t, c.env(), args...)
}

// ok runs the CLI and fails the test unless it exits 0.
func (c signCLI) ok(t *testing.T, args ...string) result {
	t.Helper()
	r := c.run(t, args...)
	if r.code != 0 {
		t.Fatalf("want success, got %v", r)
	}
	return r
}

// fails checks the CLI's failure contract (see fails in main_test.go).
func (c signCLI) fails(t *testing.T, args []string, want ...string) string {
	t.Helper()
	return failsEnv(t, c.env(), args, want...)
}

// signFixtures are the compiled fixtures and keys the signing tests share.
type signFixtures struct {
	dir      string
	target   string // basic/target.c with a build-id unique to this run
	unsigned string // patch image compute=compute_v2, unsigned
	key, pub string // trusted key pair "dev"
	fp       string // its fingerprint
	trustDir string // holds dev.pub only
}

var fingerprintRE = regexp.MustCompile(`SHA256:[0-9a-f]{64}`)

func copyFile(t *testing.T, from, to string) string {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return to
}

// flipTextByte flips the first byte of .text in the patch image at path.
func flipTextByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	text := f.Section(".text")
	if text == nil || text.Size == 0 {
		t.Fatalf("%s has no .text", path)
	}
	b[text.Offset] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSignCLI drives key generation, signing, verification, inspection
// and signed applies through the hotpatch binary.
func TestSignCLI(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found in PATH; the signing CLI tests pack patch images from real gcc objects")
	}
	cli := signCLI{}
	dir := t.TempDir()
	cli.trustDir = filepath.Join(dir, "no-trust-dir") // does not exist

	var fx signFixtures
	fx.dir = dir
	id := make([]byte, 20)
	if _, err := rand.Read(id); err != nil {
		t.Fatal(err)
	}
	src := fixture.Dir(t, "basic")
	fx.target = filepath.Join(dir, "target")
	fixture.GCC(t, "-O2", "-g", "-pthread", "-o", fx.target, filepath.Join(src, "target.c"), "-Wl,--build-id=0x"+hex.EncodeToString(id))
	obj := filepath.Join(dir, "compute_v2.o")
	fixture.GCC(t, "-c", "-O2", "-fPIC", "-o", obj, filepath.Join(src, "compute_v2.c"))
	fx.unsigned = filepath.Join(dir, "unsigned.hp")
	cli.ok(t, "pack", "--target", fx.target, "--replace", "compute=compute_v2", "--id", "sign-test", "-o", fx.unsigned, obj)

	// key generate writes NAME.key (0600) and NAME.pub and prints the
	// fingerprint; it never overwrites.
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	r := cli.ok(t, "key", "generate", "-o", filepath.Join(keys, "dev"))
	fx.key, fx.pub = filepath.Join(keys, "dev.key"), filepath.Join(keys, "dev.pub")
	fx.fp = fingerprintRE.FindString(r.stdout)
	if fx.fp == "" || !strings.Contains(r.stdout, fx.key) || !strings.Contains(r.stdout, fx.pub) {
		t.Fatalf("key generate output: %q", r.stdout)
	}
	for path, mode := range map[string]os.FileMode{fx.key: 0o600, fx.pub: 0o644} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), mode)
		}
	}
	pubText, _ := os.ReadFile(fx.pub)
	keyText, _ := os.ReadFile(fx.key)
	if !strings.HasPrefix(string(pubText), "hotpatch-ed25519-public ") || !strings.HasPrefix(string(keyText), "hotpatch-ed25519-private ") {
		t.Errorf("key files: %q / (private, %d bytes)", pubText, len(keyText))
	}
	cli.fails(t, []string{"key", "generate", "-o", filepath.Join(keys, "dev")}, "dev.key", "already exists")
	if after, _ := os.ReadFile(fx.key); !bytes.Equal(after, keyText) {
		t.Fatal("key generate overwrote an existing private key")
	}
	for _, f := range []string{fx.pub, fx.key} {
		if r := cli.ok(t, "key", "fingerprint", f); !strings.HasPrefix(r.stdout, fx.fp+" ") {
			t.Errorf("key fingerprint %s = %q, want %s", f, r.stdout, fx.fp)
		}
	}
	cli.ok(t, "key", "generate", "-o", filepath.Join(keys, "other"))

	fx.trustDir = filepath.Join(dir, "trusted.d")
	if err := os.Mkdir(fx.trustDir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, fx.pub, filepath.Join(fx.trustDir, "dev.pub"))

	t.Run("sign-verify-inspect", func(t *testing.T) { testSignVerifyInspect(t, cli, fx) })
	t.Run("apply", func(t *testing.T) { testSignedApply(t, cli, fx) })
}

func testSignVerifyInspect(t *testing.T, cli signCLI, fx signFixtures) {
	dir := t.TempDir()
	hp := copyFile(t, fx.unsigned, filepath.Join(dir, "p.hp"))
	before, _ := os.ReadFile(hp)

	r := cli.ok(t, "sign", "--key", fx.key, hp)
	if !strings.Contains(r.stdout, fx.fp) {
		t.Errorf("sign output does not name the key: %q", r.stdout)
	}
	after, _ := os.ReadFile(hp)
	if len(after) != len(before) {
		t.Fatalf("sign changed the file size: %d -> %d", len(before), len(after))
	}
	diff := 0
	for i := range before {
		if before[i] != after[i] {
			diff++
		}
	}
	if diff == 0 || diff > 128 {
		t.Errorf("sign changed %d bytes; want only signature slot bytes", diff)
	}

	// verify: with --trust, with the trust directory, and refusals.
	r = cli.ok(t, "verify", "--trust", fx.pub, hp)
	if !strings.Contains(r.stdout, "signature valid") || !strings.Contains(r.stdout, fx.fp) {
		t.Errorf("verify --trust output: %q", r.stdout)
	}
	trusted := signCLI{trustDir: fx.trustDir}
	r = trusted.ok(t, "verify", hp)
	if !strings.Contains(r.stdout, fx.fp) || !strings.Contains(r.stdout, filepath.Join(fx.trustDir, "dev.pub")) {
		t.Errorf("verify with the trust directory: %q", r.stdout)
	}
	cli.fails(t, []string{"verify", hp}, "untrusted key", fx.fp, cli.trustDir, "does not exist", ".pub")
	cli.fails(t, []string{"verify", fx.unsigned}, "not signed")
	other := filepath.Join(filepath.Dir(fx.pub), "other.pub")
	cli.fails(t, []string{"verify", "--trust", other, hp}, "untrusted key", fx.fp, "1 --trust file")
	cli.fails(t, []string{"verify", "--trust", filepath.Join(dir, "missing.pub"), hp}, "missing.pub", "no such file")
	cli.fails(t, []string{"verify", "--trust", fx.key, hp}, "private key")

	// inspect reports the verification result on the signature line.
	r = trusted.ok(t, "inspect", hp)
	if !regexp.MustCompile(`(?m)^signature: +valid, trusted key ` + fx.fp).MatchString(r.stdout) {
		t.Errorf("inspect with a trusted key:\n%s", r.stdout)
	}
	r = cli.ok(t, "inspect", hp)
	if !regexp.MustCompile(`(?m)^signature: +signed by untrusted key ` + fx.fp).MatchString(r.stdout) {
		t.Errorf("inspect without a trusted key:\n%s", r.stdout)
	}
	r = cli.ok(t, "inspect", "--json", "--trust", fx.pub, hp)
	if !strings.Contains(r.stdout, `"verification": {`) || !strings.Contains(r.stdout, `"state": "valid"`) || !strings.Contains(r.stdout, `"state": "present"`) {
		t.Errorf("inspect --json:\n%s", r.stdout)
	}
	tampered := copyFile(t, hp, filepath.Join(dir, "tampered.hp"))
	flipTextByte(t, tampered)
	r = trusted.ok(t, "inspect", tampered)
	if !regexp.MustCompile(`(?m)^signature: +does not verify, key ` + fx.fp).MatchString(r.stdout) {
		t.Errorf("inspect of a tampered image:\n%s", r.stdout)
	}
	trusted.fails(t, []string{"verify", tampered}, "does not verify", "modified after signing", fx.fp)
	r = cli.ok(t, "inspect", fx.unsigned)
	if !regexp.MustCompile(`(?m)^signature: +unsigned`).MatchString(r.stdout) {
		t.Errorf("inspect of an unsigned image:\n%s", r.stdout)
	}

	// Re-signing replaces the signature.
	r = cli.ok(t, "sign", "--key", filepath.Join(filepath.Dir(fx.key), "other.key"), hp)
	if !strings.Contains(r.stdout, "replacing a signature by "+fx.fp) {
		t.Errorf("re-sign output: %q", r.stdout)
	}
	trusted.fails(t, []string{"verify", hp}, "untrusted key")
	cli.ok(t, "verify", "--trust", other, hp)
	cli.ok(t, "sign", "--key", fx.key, hp)
	trusted.ok(t, "verify", hp)
	if again, _ := os.ReadFile(hp); !bytes.Equal(again, after) {
		t.Error("signing again with the first key did not restore the same bytes")
	}

	// sign refusals: loose key permissions, bad key files, non-images.
	loose := copyFile(t, fx.key, filepath.Join(dir, "loose.key"))
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	cli.fails(t, []string{"sign", "--key", loose, hp}, "loose.key", "chmod 600")
	cli.fails(t, []string{"sign", "--key", dir, hp}, "directory")
	cli.fails(t, []string{"sign", "--key", filepath.Join(dir, "nope.key"), hp}, "nope.key", "no such file")
	pubAsKey := copyFile(t, fx.pub, filepath.Join(dir, "pub-as.key"))
	if err := os.Chmod(pubAsKey, 0o600); err != nil {
		t.Fatal(err)
	}
	cli.fails(t, []string{"sign", "--key", pubAsKey, hp}, "public key")
	cli.fails(t, []string{"sign", hp}, "--key")
	notImage := filepath.Join(dir, "notes.hp")
	if err := os.WriteFile(notImage, []byte("not a patch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cli.fails(t, []string{"sign", "--key", fx.key, notImage}, "notes.hp")
	if b, _ := os.ReadFile(notImage); string(b) != "not a patch\n" {
		t.Error("sign modified a file it refused")
	}
}

func testSignedApply(t *testing.T, cli signCLI, fx signFixtures) {
	fixture.Require(t)
	dir := t.TempDir()
	signed := copyFile(t, fx.unsigned, filepath.Join(dir, "signed.hp"))
	cli.ok(t, "sign", "--key", fx.key, signed)
	tampered := copyFile(t, signed, filepath.Join(dir, "tampered.hp"))
	flipTextByte(t, tampered)
	trusted := signCLI{trustDir: fx.trustDir}

	p := fixture.Start(t, fx.target)
	p.WaitFor(t, 0, "compute=42", 5*time.Second)
	pid := strconv.Itoa(p.PID)
	// The engine leaves a lock file per process it opened; a refused apply
	// must not get that far.
	lockFile := "/run/hotpatch/pid-" + pid + ".lock"
	_, statErr := os.Stat(lockFile)
	lockBefore := statErr == nil

	refused := func(name string, c signCLI, args []string, want ...string) {
		t.Helper()
		line := c.fails(t, args, want...)
		t.Logf("%s: %s", name, line)
		if m := maps(t, p.PID); strings.Contains(m, "hotpatch") {
			t.Fatalf("%s: a patch mapping appeared:\n%s", name, m)
		}
		if !p.Alive() {
			t.Fatalf("%s: the target is not running", name)
		}
		if _, err := os.Stat(lockFile); !lockBefore && err == nil {
			t.Errorf("%s: the engine opened the process (%s exists)", name, lockFile)
		}
		p.WaitFor(t, p.Mark(), "compute=42", 5*time.Second)
	}
	refused("tampered", trusted, []string{"apply", "--pid", pid, tampered}, "does not verify", "modified after signing", fx.fp)
	refused("tampered, --allow-unsigned", trusted, []string{"apply", "--pid", pid, "--allow-unsigned", tampered}, "does not verify", fx.fp, "only unsigned")
	refused("untrusted", cli, []string{"apply", "--pid", pid, signed}, "untrusted key", fx.fp, cli.trustDir, "does not exist")
	refused("untrusted, --allow-unsigned", cli, []string{"apply", "--pid", pid, "--allow-unsigned", signed}, "untrusted key", fx.fp)
	refused("other key trusted", cli, []string{"apply", "--pid", pid, "--trust", filepath.Join(filepath.Dir(fx.pub), "other.pub"), signed}, "untrusted key", fx.fp)
	refused("unsigned", trusted, []string{"apply", "--pid", pid, fx.unsigned}, "not signed", "--allow-unsigned")

	// A valid signature by a key in the trust directory.
	r := trusted.ok(t, "apply", "--pid", pid, signed)
	if !strings.Contains(r.stdout, "signature valid") || !strings.Contains(r.stdout, fx.fp) || !strings.Contains(r.stdout, "applied sign-test") {
		t.Errorf("apply output: %q", r.stdout)
	}
	if strings.Contains(r.stderr, "WARN") {
		t.Errorf("a signed apply logged a warning: %q", r.stderr)
	}
	p.WaitFor(t, p.Mark(), "compute=63", 5*time.Second)
	cli.ok(t, "revert", "--pid", pid, "sign-test")
	p.WaitFor(t, p.Mark(), "compute=42", 5*time.Second)

	// The same through --trust, with no trust directory.
	cli.ok(t, "apply", "--pid", pid, "--trust", fx.pub, signed)
	p.WaitFor(t, p.Mark(), "compute=63", 5*time.Second)
	cli.ok(t, "revert", "--pid", pid, "sign-test")
	p.WaitFor(t, p.Mark(), "compute=42", 5*time.Second)

	// --allow-unsigned admits an unsigned image, with a logged warning.
	r = cli.ok(t, "apply", "--pid", pid, "--allow-unsigned", fx.unsigned)
	if !strings.Contains(r.stderr, "level=WARN") || !strings.Contains(r.stderr, "unsigned") || !strings.Contains(r.stderr, "allow-unsigned") {
		t.Errorf("apply --allow-unsigned did not log a warning: %q", r.stderr)
	}
	p.WaitFor(t, p.Mark(), "compute=63", 5*time.Second)
	cli.ok(t, "revert", "--pid", pid, "--all")
	p.WaitFor(t, p.Mark(), "compute=42", 5*time.Second)
}
