package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/patchfile"
)

// Options describe one patch build.
type Options struct {
	Src    string // the source tree the target was built from
	Diff   string // the fix, a unified diff applied with -p1
	Target string // the executable or shared library the patch is for

	BuildCmd string // shell command that builds the tree; default "make"
	// CC and CXX are the C and C++ compilers the target was built with,
	// e.g. a cross compiler (aarch64-linux-gnu-gcc); default gcc (cc) and
	// g++ (c++) from PATH. With CC alone, CXX is its g++ (clang++) sibling
	// of the same prefix and version when there is one. They must produce code for the target's machine.
	CC, CXX     string
	Jobs        int    // parallel jobs (MAKEFLAGS -jN); default the number of CPUs
	ID          string // patch id; default the diff's name and a hash
	Description string
	// Force accepts refusals that are only warnings.
	Force bool

	// WorkDir is the scratch directory; a temporary one by default, which
	// is removed afterwards unless KeepWork is set.
	WorkDir  string
	KeepWork bool

	// Wrapper is the command that runs WrapperMain, before the compiler's
	// arguments; default: this executable with the argument "cc".
	Wrapper []string
	// Log receives the build commands' output; nil discards it.
	Log io.Writer
}

// Function reports one replaced function.
type Function struct {
	Name    string `json:"name"`
	File    string `json:"file,omitempty"` // source file (for static functions the disambiguator)
	New     string `json:"new"`
	OldSize uint64 `json:"old_size"`
	NewSize uint64 `json:"new_size"`
}

// Result is a finished patch build.
type Result struct {
	Image []byte
	Meta  patchfile.Metadata

	Functions []Function
	Added     []string // new functions the patch carries
	NewData   []string // new variables the patch carries
	Constants []string // changed read-only data carried as copies
	LineOnly  []string // functions changed only in line numbers; not included
	Warnings  []Refusal
	Skipped   []string // compiled sources that are not part of the target
	Bindings  []string // references to the target's local symbols

	OriginalBuild, PatchedBuild, Analysis time.Duration
	// AnalysisCompile is the time of the original build's analysis
	// compiles of the sources the fixed build compiled again (aarch64).
	AnalysisCompile time.Duration
	WorkDir         string
}

type builder struct {
	opts Options
	tgt  *targetImage
	diff *Diff
	raw  []byte
	tree string // the scratch copy of the source tree
}

// Build makes a patch image from a source tree and a fix. The image is
// in Result.Image; nothing is written unless the caller does.
func Build(ctx context.Context, opts Options) (*Result, error) {
	if opts.Src == "" || opts.Diff == "" || opts.Target == "" {
		return nil, errors.New("build needs a source tree, a diff and a target")
	}
	if opts.BuildCmd == "" {
		opts.BuildCmd = "make"
	}
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.NumCPU()
	}
	raw, err := os.ReadFile(opts.Diff)
	if err != nil {
		return nil, err
	}
	d, err := ParseDiff(raw)
	if err != nil {
		return nil, err
	}
	tgt, err := openTarget(opts.Target)
	if err != nil {
		return nil, err
	}
	defer tgt.close()
	b := &builder{opts: opts, tgt: tgt, diff: d, raw: raw}
	if opts.ID == "" {
		sum := sha256.Sum256(raw)
		base := strings.TrimSuffix(filepath.Base(opts.Diff), filepath.Ext(opts.Diff))
		opts.ID = sanitizeID(base) + "-" + hex.EncodeToString(sum[:4])
		b.opts.ID = opts.ID
	}
	res := &Result{}
	work := opts.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "hotpatch-build-"); err != nil {
			return nil, err
		}
		if !opts.KeepWork {
			defer os.RemoveAll(work)
		}
	}
	res.WorkDir = work
	origRecs, patchedRecs, err := b.buildTwice(ctx, work, res)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := b.analyse(origRecs, patchedRecs, res); err != nil {
		return nil, err
	}
	res.Analysis = time.Since(start)
	return res, nil
}

func sanitizeID(s string) string {
	var out []byte
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			out = append(out, c)
		} else {
			out = append(out, '-')
		}
	}
	if len(out) == 0 || len(out) > 48 {
		return "fix"
	}
	return string(out)
}

// buildTwice copies the tree, builds it, applies the fix and builds again.
// The second build is incremental, as after any source change, so only
// what the fix touches is compiled twice. Where the machine has analysis
// flags, the original build's analysis compiles of those sources follow
// (analysiscc.go).
func (b *builder) buildTwice(ctx context.Context, work string, res *Result) (orig, patched []CompileRecord, err error) {
	tree := filepath.Join(work, "src")
	b.tree = tree
	if err := copyTree(b.opts.Src, tree); err != nil {
		return nil, nil, fmt.Errorf("copy source tree: %w", err)
	}
	binDir := filepath.Join(work, "bin")
	env, err := b.wrapperEnv(binDir)
	if err != nil {
		return nil, nil, err
	}
	origLog, patchedLog := filepath.Join(work, "log-original"), filepath.Join(work, "log-patched")
	for _, d := range []string{origLog, patchedLog} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, nil, err
		}
	}
	// The builder tells the files the original build writes by their
	// mtimes, which the file system's clock gives.
	buildStart, err := fsNow(work)
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	if err := b.runBuild(ctx, "original", tree, append(env, EnvLogDir+"="+origLog, EnvStage+"=original")); err != nil {
		return nil, nil, err
	}
	res.OriginalBuild = time.Since(start)
	if orig, err = readRecords(origLog); err != nil {
		return nil, nil, err
	}
	if len(orig) == 0 {
		return nil, nil, fmt.Errorf("%w: the build compiled nothing through the wrapper (does it ignore CC and PATH, or was the tree already built out of tree?)", ErrUnsupported)
	}
	newest := newestOutput(orig)
	var pre *preFix
	if needsAnalysisCompiles(orig) {
		if pre, err = b.snapshotTree(buildStart); err != nil {
			return nil, nil, fmt.Errorf("record the tree before the fix: %w", err)
		}
	}
	if err := b.diff.Apply(tree); err != nil {
		return nil, nil, err
	}
	// A changed file must look newer than every object built from it,
	// also on file systems with coarse timestamps.
	for _, f := range b.diff.Files {
		if f.Deleted {
			continue
		}
		p := filepath.Join(tree, f.Path)
		if st, err := os.Stat(p); err == nil && !st.ModTime().After(newest) {
			t := newest.Add(time.Second)
			os.Chtimes(p, t, t)
		}
	}
	start = time.Now()
	if err := b.runBuild(ctx, "patched", tree, append(env, EnvLogDir+"="+patchedLog, EnvStage+"=patched")); err != nil {
		return nil, nil, err
	}
	res.PatchedBuild = time.Since(start)
	if patched, err = readRecords(patchedLog); err != nil {
		return nil, nil, err
	}
	for _, rs := range [][]CompileRecord{orig, patched} {
		for i := range rs {
			rs[i].Source = relTo(tree, rs[i].Source)
			rs[i].Output = relTo(tree, rs[i].Output)
		}
	}
	// Every compiled source the fix changes must have been compiled again,
	// or the patch would silently miss part of the fix.
	compiled := map[string]bool{}
	for _, r := range patched {
		compiled[filepath.Clean(r.Source)] = true
	}
	for _, f := range b.diff.Files {
		if f.Deleted || !compiledExt[filepath.Ext(f.Path)] || compiled[filepath.Clean(f.Path)] {
			continue
		}
		return nil, nil, fmt.Errorf("%w: the fixed build did not compile %s again (a sub-build guarded by a stamp file?); clean that part of the tree, e.g. make distclean, and build again", ErrUnsupported, f.Path)
	}
	if pre != nil {
		start = time.Now()
		if err := b.analysisCompiles(ctx, orig, patched, pre); err != nil {
			return nil, nil, err
		}
		res.AnalysisCompile = time.Since(start)
	}
	return orig, patched, nil
}

func relTo(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

func newestOutput(recs []CompileRecord) time.Time {
	var t time.Time
	for _, r := range recs {
		if st, err := os.Stat(r.Output); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
		if tt := time.Unix(0, r.Time); tt.After(t) {
			t = tt
		}
	}
	return t
}

// wrapperEnv writes the compiler wrapper scripts and returns the build's
// environment: the scripts first on PATH and as CC and CXX.
func (b *builder) wrapperEnv(binDir string) ([]string, error) {
	wrapper := b.opts.Wrapper
	if len(wrapper) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		wrapper = []string{exe, "cc"}
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	var quoted []string
	for _, w := range wrapper {
		quoted = append(quoted, shellQuote(w))
	}
	ccReal, cxxReal, err := b.compilers()
	if err != nil {
		return nil, err
	}
	// The scripts stand for the usual names and for the compilers' own
	// (a Makefile may call $(CROSS_COMPILE)gcc).
	scripts := map[string]string{}
	if ccReal != "" {
		for _, name := range []string{"cc", "gcc", filepath.Base(ccReal)} {
			scripts[name] = ccReal
		}
	}
	if cxxReal != "" {
		for _, name := range []string{"c++", "g++", filepath.Base(cxxReal)} {
			scripts[name] = cxxReal
		}
	}
	for name, real := range scripts {
		script := fmt.Sprintf("#!/bin/sh\n%s=%s\nexport %s\nexec %s \"$@\"\n", EnvRealCompiler, shellQuote(real), EnvRealCompiler, strings.Join(quoted, " "))
		if err := os.WriteFile(filepath.Join(binDir, name), []byte(script), 0o755); err != nil {
			return nil, err
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "CC", "CXX", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", EnvLogDir, EnvRealCompiler, EnvMachine, EnvStage:
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"CC="+filepath.Join(binDir, "gcc"), EnvMachine+"="+b.tgt.mach.name,
		fmt.Sprintf("MAKEFLAGS=-j%d", b.opts.Jobs), fmt.Sprintf("CMAKE_BUILD_PARALLEL_LEVEL=%d", b.opts.Jobs))
	if cxxReal != "" {
		env = append(env, "CXX="+filepath.Join(binDir, "g++"))
	}
	return env, nil
}

// compilers finds the real C and C++ compilers and checks that they make
// code for the target's machine. The C++ one is "" when there is none.
func (b *builder) compilers() (cc, cxx string, err error) {
	look := func(flag, prog string) (string, error) {
		if strings.ContainsAny(prog, " \t") {
			return "", fmt.Errorf("%w: %s %q: name one compiler program, without options (put options in the build command)", ErrUnsupported, flag, prog)
		}
		p, err := exec.LookPath(prog)
		if err != nil {
			return "", fmt.Errorf("%w: %s %s: %v", ErrUnsupported, flag, prog, err)
		}
		return filepath.Abs(p)
	}
	switch {
	case b.opts.CC != "":
		if cc, err = look("--cc", b.opts.CC); err != nil {
			return "", "", err
		}
	default:
		for _, name := range []string{"gcc", "cc"} {
			if p, err := exec.LookPath(name); err == nil {
				cc, _ = filepath.Abs(p)
				break
			}
		}
		if cc == "" {
			return "", "", fmt.Errorf("%w: no C compiler (gcc or cc) on PATH", ErrUnsupported)
		}
	}
	switch {
	case b.opts.CXX != "":
		if cxx, err = look("--cxx", b.opts.CXX); err != nil {
			return "", "", err
		}
	case b.opts.CC != "":
		// aarch64-linux-gnu-gcc goes with aarch64-linux-gnu-g++, and
		// aarch64-linux-gnu-gcc-12 with aarch64-linux-gnu-g++-12.
		if name := cxxSibling(filepath.Base(b.opts.CC)); name != "" {
			for _, c := range []string{filepath.Join(filepath.Dir(cc), name), name} {
				if p, err := exec.LookPath(c); err == nil {
					cxx, _ = filepath.Abs(p)
					break
				}
			}
		}
	default:
		for _, name := range []string{"g++", "c++"} {
			if p, err := exec.LookPath(name); err == nil {
				cxx, _ = filepath.Abs(p)
				break
			}
		}
	}
	for _, c := range []struct{ flag, path string }{{"--cc", cc}, {"--cxx", cxx}} {
		if c.path == "" {
			continue
		}
		out, err := exec.Command(c.path, "-dumpmachine").Output()
		if err != nil {
			continue // not gcc-compatible: the objects' machine is checked instead
		}
		if m := machineOfTriplet(string(out)); m != b.tgt.mach {
			have := elf.EM_NONE
			if m != nil {
				have = m.em
			}
			return "", "", &MachineError{What: fmt.Sprintf("compiler %s (%s, target %s)", c.path, c.flag, strings.TrimSpace(string(out))), Have: have, Want: b.tgt.mach.em}
		}
	}
	return cc, cxx, nil
}

// siblingRE splits a C compiler's name into the part before the
// compiler's own name, that name and a version suffix: x86_64-linux-gnu-,
// gcc, -12.
var siblingRE = regexp.MustCompile(`^(.*?)(gcc|clang|cc)(-[0-9][0-9.]*)?$`)

// cxxSibling names the C++ compiler that goes with a C compiler: the same
// prefix and version, g++ for gcc, clang++ for clang, c++ for cc; "" for
// a name of no known form.
func cxxSibling(cc string) string {
	m := siblingRE.FindStringSubmatch(cc)
	if m == nil {
		return ""
	}
	cxx := map[string]string{"gcc": "g++", "clang": "clang++", "cc": "c++"}[m[2]]
	return m[1] + cxx + m[3]
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// tail keeps the end of a command's output for error messages.
type tail struct {
	buf []byte
	w   io.Writer
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8192 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	if t.w != nil {
		t.w.Write(p)
	}
	return len(p), nil
}

func (b *builder) runBuild(ctx context.Context, stage, dir string, env []string) error {
	cmd := exec.CommandContext(ctx, "sh", "-c", b.opts.BuildCmd)
	cmd.Dir = dir
	cmd.Env = env
	out := &tail{w: b.opts.Log}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		text := string(out.buf)
		if i := strings.Index(text, "\n"); len(out.buf) >= 4096 && i >= 0 {
			text = text[i+1:]
		}
		return &CommandError{Stage: stage, Command: b.opts.BuildCmd, Output: strings.TrimSpace(text), Err: err}
	}
	return nil
}

// sourceExt lists the files whose modification time copyTree sets to the
// time of the copy, so that everything built from them is rebuilt.
var sourceExt = map[string]bool{
	".c": true, ".h": true, ".cc": true, ".cpp": true, ".cxx": true, ".c++": true, ".C": true, ".H": true,
	".cp": true, ".CPP": true, ".hh": true, ".hpp": true, ".hxx": true, ".h++": true, ".inl": true, ".ipp": true, ".tcc": true, ".i": true, ".ii": true,
}

// compiledExt are the source extensions a compiler turns into objects.
var compiledExt = map[string]bool{".c": true, ".cc": true, ".cpp": true, ".cxx": true, ".c++": true, ".C": true, ".cp": true, ".CPP": true}

// copyTree copies a source tree, keeping modification times so that the
// build system sees it as it was (autotools would otherwise regenerate
// itself), without version control data. C and C++ sources and headers get
// the time of the copy instead, so that every object that depends on them
// is built again through the wrapper. Objects are kept: a build whose
// sub-builds are guarded by stamp files (redis's deps/) links them without
// rebuilding; the patched build then checks that every source the diff
// touches was compiled. Precompiled headers and CMake caches that name the
// old compiler are left out.
func copyTree(src, dst string) error {
	src = filepath.Clean(src)
	now := time.Now()
	return filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		name := info.Name()
		switch {
		case info.IsDir():
			if rel != "." && (name == ".git" || name == ".hg" || name == ".svn") {
				return filepath.SkipDir
			}
			return os.MkdirAll(to, info.Mode().Perm()|0o700)
		case info.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			// A link into the tree must lead into the copy, not to the
			// user's files; a relative one out of it to where it led.
			dest := l
			if !filepath.IsAbs(dest) {
				dest = filepath.Join(filepath.Dir(p), l)
			}
			if r, ok := within(src, dest); ok {
				if filepath.IsAbs(l) {
					l = filepath.Join(dst, r)
				}
			} else if !filepath.IsAbs(l) {
				l = dest
			}
			return os.Symlink(l, to)
		case !info.Mode().IsRegular():
			return nil
		case strings.HasSuffix(name, ".gch") || name == "CMakeCache.txt":
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to, data, info.Mode().Perm()|0o600); err != nil {
			return err
		}
		mtime := info.ModTime()
		if sourceExt[filepath.Ext(name)] {
			mtime = now
		}
		return os.Chtimes(to, mtime, mtime)
	})
}

// within returns p relative to root if p is inside root, also when root
// is reached through symbolic links.
func within(root, p string) (string, bool) {
	roots := []string{filepath.Clean(root)}
	if r, err := filepath.EvalSymlinks(root); err == nil {
		roots = append(roots, r)
	}
	for _, r := range roots {
		if rel, err := filepath.Rel(r, filepath.Clean(p)); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return rel, true
		}
	}
	return "", false
}

// latest keeps, for each (source, output), the last compile.
func latest(recs []CompileRecord) map[[2]string]CompileRecord {
	out := map[[2]string]CompileRecord{}
	for _, r := range recs {
		k := [2]string{r.Source, r.Output}
		if old, ok := out[k]; !ok || r.Time > old.Time {
			out[k] = r
		}
	}
	return out
}

func sameFile(a, b string) bool {
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func sortedKeys(m map[[2]string]CompileRecord) [][2]string {
	var keys [][2]string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	return keys
}
