package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

const waitLine = 5 * time.Second

// cli is the hotpatch binary built once for the whole test binary, in
// workDir, which also holds the shared fixtures and is removed at the end.
var cli, workDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	workDir = dir
	cli = filepath.Join(dir, "hotpatch")
	build := exec.Command("go", "build", "-o", cli, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build -o %s .: %v\n%s", cli, err, out)
		return 1
	}
	return m.Run()
}

// result is one finished run of the CLI.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("hotpatch %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// hotpatch runs the CLI with args and returns what it printed and its exit code.
func hotpatch(t *testing.T, args ...string) result {
	t.Helper()
	return hotpatchEnv(t, nil, args...)
}

// hotpatchEnv is hotpatch with extra environment variables.
func hotpatchEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run hotpatch %s: %v", strings.Join(args, " "), err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

// ok runs the CLI and fails the test unless it exits 0.
func ok(t *testing.T, args ...string) result {
	t.Helper()
	r := hotpatch(t, args...)
	if r.code != 0 {
		t.Fatalf("want success, got %v", r)
	}
	return r
}

// fails runs the CLI and checks the failure contract: a non-zero exit, one
// "hotpatch: " line on stderr containing every string in want, and no Go
// panic or stack trace. It returns that line.
func fails(t *testing.T, args []string, want ...string) string {
	t.Helper()
	return failsEnv(t, nil, args, want...)
}

// failsEnv is fails with extra environment variables.
func failsEnv(t *testing.T, env []string, args []string, want ...string) string {
	t.Helper()
	r := hotpatchEnv(t, env, args...)
	if r.code == 0 {
		t.Fatalf("want failure, got %v", r)
	}
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
		t.Fatalf("stack trace on stderr: %v", r)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	// apply --allow-unsigned logs a warning before it looks at the process;
	// the failure itself is still the one "hotpatch: " line after it.
	if len(lines) == 2 && strings.Contains(lines[0], "level=WARN") && strings.Contains(lines[0], "unsigned") {
		lines = lines[1:]
	}
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "hotpatch: ") {
		t.Fatalf("want exactly one \"hotpatch: \" line on stderr, got %v", r)
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("error line %q does not mention %q", lines[0], w)
		}
	}
	return lines[0]
}

// artifacts are the compiled fixtures shared by the tests.
type artifacts struct {
	dir    string
	target string // basic/target.c, with a build-id unique to this run
	obj    string // basic/compute_v2.c as a -fPIC object
}

var (
	shared      artifacts
	sharedOnce  sync.Once
	sharedBuilt bool
)

// setup skips when live patching cannot run here and compiles the shared
// fixtures on first use.
func setup(t *testing.T) artifacts {
	t.Helper()
	fixture.Require(t)
	sharedOnce.Do(func() {
		dir := filepath.Join(workDir, "fixtures")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
		shared.target = buildTarget(t, dir, "basic")
		shared.obj = filepath.Join(dir, "compute_v2.o")
		fixture.GCC(t, "-c", "-O2", "-fPIC", "-o", shared.obj, filepath.Join(fixture.Dir(t, "basic"), "compute_v2.c"))
		sharedBuilt = true
	})
	if !sharedBuilt {
		t.Fatal("compiling the fixtures failed in an earlier test")
	}
	return shared
}

// buildTarget compiles basic/target.c with a random build-id, so that
// `apply --all` can only ever find processes started by this test binary.
func buildTarget(t *testing.T, dir, name string) string {
	t.Helper()
	id := make([]byte, 20)
	if _, err := rand.Read(id); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	fixture.GCC(t, "-O2", "-g", "-pthread", "-o", bin, filepath.Join(fixture.Dir(t, "basic"), "target.c"),
		"-Wl,--build-id=0x"+hex.EncodeToString(id))
	return bin
}

// pack writes a patch image redirecting compute to compute_v2 and returns its path.
func pack(t *testing.T, a artifacts, targetPath, id string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), id+".hp")
	r := ok(t, "pack", "--target", targetPath, "--replace", "compute=compute_v2", "--id", id, "-o", out, a.obj)
	if !strings.Contains(r.stdout, "wrote "+out) || !strings.Contains(r.stdout, id) {
		t.Errorf("pack output does not name the file and id: %q", r.stdout)
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		t.Fatalf("pack wrote no file: %v", err)
	}
	return out
}

// start runs a fixture process and waits until it prints unpatched output.
func start(t *testing.T, bin string) *fixture.Proc {
	t.Helper()
	p := fixture.Start(t, bin)
	p.WaitFor(t, 0, "compute=42", waitLine)
	return p
}

func maps(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// code returns the first bytes of function name as the process runs them.
func code(t *testing.T, pid int, bin, name string) []byte {
	t.Helper()
	return fixture.ReadMemory(t, pid, fixture.FuncAddr(t, pid, bin, name), 16)
}

// kernelNamesMappings reports whether this kernel names anonymous mappings
// (CONFIG_ANON_VMA_NAME), which is what shows hotpatch:<id> in maps.
func kernelNamesMappings() bool {
	mem, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	defer unix.Munmap(mem)
	name := []byte("probe\x00")
	err = unix.Prctl(unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&name[0])))
	return err == nil
}

// exitedPID returns the PID of a process that has already been reaped.
func exitedPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.Pid()
}

func TestPackInspect(t *testing.T) {
	a := setup(t)
	hp := pack(t, a, a.target, "cli-inspect")

	r := ok(t, "inspect", hp)
	for _, want := range []string{"cli-inspect", "compute", "compute_v2", "unsigned"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, r.stdout)
		}
	}

	r = ok(t, "inspect", "--json", hp)
	var got struct {
		Metadata struct {
			ID            string `json:"id"`
			TargetBuildID string `json:"target_build_id"`
		} `json:"metadata"`
		Functions []struct {
			Old string `json:"old"`
			New string `json:"new"`
		} `json:"functions"`
		Signature struct {
			State string `json:"state"`
		} `json:"signature"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("inspect --json is not JSON: %v\n%s", err, r.stdout)
	}
	if got.Metadata.ID != "cli-inspect" || got.Metadata.TargetBuildID == "" {
		t.Errorf("metadata = %+v", got.Metadata)
	}
	if len(got.Functions) != 1 || got.Functions[0].Old != "compute" || got.Functions[0].New != "compute_v2" {
		t.Errorf("functions = %+v, want compute -> compute_v2", got.Functions)
	}
	if got.Signature.State != "unsigned" {
		t.Errorf("signature state = %q, want unsigned", got.Signature.State)
	}

	// Without --id the id is derived from the object name.
	out := filepath.Join(t.TempDir(), "default.hp")
	r = ok(t, "pack", "--target", a.target, "--replace", "compute=compute_v2", "-o", out, a.obj)
	if !strings.Contains(r.stdout, "patch compute_v2-") {
		t.Errorf("default id not derived from the object name: %q", r.stdout)
	}
}

func TestApplyNeedsAllowUnsigned(t *testing.T) {
	a := setup(t)
	hp := pack(t, a, a.target, "cli-unsigned")
	p := start(t, a.target)
	before := code(t, p.PID, a.target, "compute")

	fails(t, []string{"apply", "--pid", strconv.Itoa(p.PID), hp}, "--allow-unsigned", "not signed")

	if m := maps(t, p.PID); strings.Contains(m, "hotpatch") {
		t.Errorf("a patch mapping appeared after a refused apply:\n%s", m)
	}
	if after := code(t, p.PID, a.target, "compute"); !bytes.Equal(before, after) {
		t.Errorf("compute's bytes changed after a refused apply: % x -> % x", before, after)
	}
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
	if r := ok(t, "status", "--pid", strconv.Itoa(p.PID)); !strings.Contains(r.stdout, "no patches") {
		t.Errorf("status after a refused apply: %q", r.stdout)
	}
}

func TestApplyStatusRevert(t *testing.T) {
	a := setup(t)
	const id = "cli-cycle"
	hp := pack(t, a, a.target, id)
	p := start(t, a.target)
	pid := strconv.Itoa(p.PID)

	r := ok(t, "apply", "--pid", pid, "--allow-unsigned", hp)
	if !strings.Contains(r.stdout, "applied "+id) || !strings.Contains(r.stdout, "compute 0x") {
		t.Errorf("apply output: %q", r.stdout)
	}
	p.WaitFor(t, p.Mark(), "compute=63", waitLine)

	r = ok(t, "status", "--pid", pid)
	if !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "active") || !strings.Contains(r.stdout, "compute") {
		t.Errorf("status does not list %s as active:\n%s", id, r.stdout)
	}

	r = ok(t, "status", "--pid", pid, "--json")
	var st []struct {
		ID        string `json:"id"`
		State     string `json:"state"`
		Phase     string `json:"phase"`
		Functions []struct {
			Name string `json:"name"`
			Live bool   `json:"live"`
		} `json:"functions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	if len(st) != 1 || st[0].ID != id || st[0].State != "active" || st[0].Phase != "active" {
		t.Fatalf("status --json = %+v", st)
	}
	if len(st[0].Functions) != 1 || st[0].Functions[0].Name != "compute" || !st[0].Functions[0].Live {
		t.Errorf("status --json functions = %+v", st[0].Functions)
	}

	r = ok(t, "apply", "--pid", pid, "--allow-unsigned", hp)
	if !strings.Contains(r.stdout, "already applied") {
		t.Errorf("second apply: %q", r.stdout)
	}
	if kernelNamesMappings() && !strings.Contains(maps(t, p.PID), "[anon:hotpatch:"+id+"]") {
		t.Errorf("patch mapping is not named hotpatch:%s:\n%s", id, maps(t, p.PID))
	}

	r = ok(t, "revert", "--pid", pid, id)
	if !strings.Contains(r.stdout, "reverted "+id) {
		t.Errorf("revert output: %q", r.stdout)
	}
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)

	r = ok(t, "status", "--pid", pid)
	if !strings.Contains(r.stdout, "no patches") {
		t.Errorf("status after revert: %q", r.stdout)
	}
	if r := ok(t, "status", "--pid", pid, "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("status --json after revert: %q", r.stdout)
	}
	if m := maps(t, p.PID); strings.Contains(m, "hotpatch") {
		t.Errorf("patch mapping left after revert:\n%s", m)
	}

	// revert --all with nothing applied is not an error.
	if r := ok(t, "revert", "--pid", pid, "--all"); !strings.Contains(r.stdout, "no patches applied") {
		t.Errorf("revert --all with no patches: %q", r.stdout)
	}
}

func TestApplyAll(t *testing.T) {
	a := setup(t)
	bin := buildTarget(t, t.TempDir(), "basic-all")
	hp := pack(t, a, bin, "cli-all")

	fails(t, []string{"apply", "--all", "--allow-unsigned", hp}, "no running process maps")

	p1, p2 := start(t, bin), start(t, bin)
	r := ok(t, "apply", "--all", "--allow-unsigned", hp)
	for _, p := range []*fixture.Proc{p1, p2} {
		if !strings.Contains(r.stdout, fmt.Sprintf("pid %d: applied cli-all", p.PID)) {
			t.Errorf("apply --all did not report pid %d:\n%s", p.PID, r.stdout)
		}
	}
	if n := strings.Count(r.stdout, ": applied "); n != 2 {
		t.Errorf("apply --all patched %d processes, want 2:\n%s", n, r.stdout)
	}
	p1.WaitFor(t, p1.Mark(), "compute=63", waitLine)
	p2.WaitFor(t, p2.Mark(), "compute=63", waitLine)

	// A second run finds both already patched.
	r = ok(t, "apply", "--all", "--allow-unsigned", hp)
	if n := strings.Count(r.stdout, "already applied"); n != 2 {
		t.Errorf("second apply --all: %q", r.stdout)
	}
	ok(t, "revert", "--pid", strconv.Itoa(p2.PID), "--all")
	p2.WaitFor(t, p2.Mark(), "compute=42", waitLine)
	p1.WaitFor(t, p1.Mark(), "compute=63", waitLine)
}

func TestErrors(t *testing.T) {
	a := setup(t)
	hp := pack(t, a, a.target, "cli-errors")
	dir := t.TempDir()
	notELF := filepath.Join(dir, "notes.hp")
	if err := os.WriteFile(notELF, []byte("this is not an ELF file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.hp")
	p := start(t, a.target)
	pid := strconv.Itoa(p.PID)
	dead := strconv.Itoa(exitedPID(t))
	out := filepath.Join(dir, "out.hp")

	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"inspect missing file", []string{"inspect", missing}, []string{"missing.hp", "no such file"}},
		{"apply missing file", []string{"apply", "--pid", pid, "--allow-unsigned", missing}, []string{"missing.hp", "no such file"}},
		{"inspect non-ELF", []string{"inspect", notELF}, []string{"notes.hp"}},
		{"apply non-ELF", []string{"apply", "--pid", pid, "--allow-unsigned", notELF}, []string{"notes.hp"}},
		{"inspect unpacked object", []string{"inspect", a.obj}, []string{"compute_v2.o", "pack"}},
		{"revert unknown id", []string{"revert", "--pid", pid, "no-such-patch"}, []string{"no-such-patch", "not applied"}},
		{"status exited pid", []string{"status", "--pid", dead}, []string{dead, "no such process"}},
		{"revert exited pid", []string{"revert", "--pid", dead, "cli-errors"}, []string{dead, "no such process"}},
		{"apply exited pid", []string{"apply", "--pid", dead, "--allow-unsigned", hp}, []string{dead, "no such process"}},
		{"pack bad replace", []string{"pack", "--target", a.target, "--replace", "nodelimiter", "-o", out, a.obj}, []string{"nodelimiter", "OLD=NEW"}},
		{"pack unknown function", []string{"pack", "--target", a.target, "--replace", "no_such_fn=compute_v2", "-o", out, a.obj}, []string{"no_such_fn", "not found"}},
		{"pack unknown new function", []string{"pack", "--target", a.target, "--replace", "compute=no_such_v2", "-o", out, a.obj}, []string{"no_such_v2"}},
		{"pack missing target", []string{"pack", "--target", filepath.Join(dir, "nope"), "--replace", "compute=compute_v2", "-o", out, a.obj}, []string{"nope"}},
		{"pack without flags", []string{"pack", a.obj}, []string{"--target"}},
		{"apply without pid", []string{"apply", "--allow-unsigned", hp}, []string{"--pid"}},
		{"apply with pid and all", []string{"apply", "--pid", pid, "--all", "--allow-unsigned", hp}, []string{"--pid", "--all"}},
		{"revert without id", []string{"revert", "--pid", pid}, []string{"--all"}},
		{"status without pid", []string{"status"}, []string{"--pid"}},
		{"unknown flag", []string{"status", "--pid", pid, "--bogus"}, []string{"--bogus"}},
		{"unknown command", []string{"frobnicate"}, []string{"frobnicate"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fails(t, c.args, c.want...)
		})
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a failed pack left %s behind", out)
	}
	if m := maps(t, p.PID); strings.Contains(m, "hotpatch") {
		t.Errorf("a failed command left a patch mapping:\n%s", m)
	}
	p.WaitFor(t, p.Mark(), "compute=42", waitLine)
}
