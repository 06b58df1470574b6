package build

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Environment variables the compiler wrapper reads.
const (
	// EnvLogDir is the directory the wrapper records compiles in. Without
	// it the wrapper runs the compiler unchanged.
	EnvLogDir = "HOTPATCH_CC_LOG"
	// EnvRealCompiler is the compiler the wrapper runs.
	EnvRealCompiler = "HOTPATCH_CC_REAL"
	// EnvMachine names the target's machine (x86_64, aarch64), which
	// decides the flags the wrapper adds (ExtraFlagsFor).
	EnvMachine = "HOTPATCH_CC_MACHINE"
	// EnvStage is "original" or "patched": which of the two builds runs.
	// Where the machine has analysis flags, the original build compiles
	// each source as the target was and records the analysis compile
	// (CompileRecord.AnalysisArgs), which the builder runs after the fixed
	// build for the sources that build compiled again; the patched build
	// compiles only for analysis.
	EnvStage = "HOTPATCH_CC_STAGE"
)

// ExtraFlags are added to every compile for x86-64 (see ExtraFlagsFor for
// the other machines). Each function and each data
// object gets its own section, so objects can be compared and cut one
// function at a time. Neither flag changes the instructions gcc generates
// for a function body; what they do change (calls between functions of one
// file become relocations) run-pre matching accepts. Flags that would make
// functions easier to patch but change code generation (-fno-inline,
// -fno-ipa-*, -flive-patching) cannot be used: the original build must
// reproduce the running binary.
var ExtraFlags = []string{"-ffunction-sections", "-fdata-sections"}

// CompileRecord is one object the wrapper saw being compiled. The wrapper
// writes one JSON file per compiler run into the log directory.
type CompileRecord struct {
	Dir    string `json:"dir"`    // working directory of the compile
	Source string `json:"source"` // absolute path of the source file
	Output string `json:"output"` // absolute path of the object it wrote
	Copy   string `json:"copy"`   // the object as compiled, kept in the log directory
	// Analysis is the same source compiled with the machine's analysis
	// flags (AnalysisFlagsFor), when they differ from the build's own and
	// the builder has compiled it.
	Analysis string `json:"analysis,omitempty"`
	// AnalysisArgs are the arguments of that compile without its output
	// (the compiler is Compiler, run in Dir with Env): the original build
	// records them and the builder runs them only for the sources the
	// fixed build compiled again (analysiscc.go).
	AnalysisArgs []string `json:"analysis_args,omitempty"`
	Env          []string `json:"env,omitempty"`
	Lang         string   `json:"lang"`     // "c", "c++" or "asm"
	Compiler     string   `json:"compiler"` // the real compiler
	Args         []string `json:"args"`     // the arguments as given, without ExtraFlags
	LTO          bool     `json:"lto,omitempty"`
	Time         int64    `json:"time"` // when the compile ended, in Unix nanoseconds
}

// options that take a separate argument.
var argOptions = map[string]bool{
	"-o": true, "-I": true, "-D": true, "-U": true, "-include": true, "-imacros": true, "-isystem": true,
	"-idirafter": true, "-iquote": true, "-iprefix": true, "-iwithprefix": true, "-isysroot": true,
	"-MF": true, "-MT": true, "-MQ": true, "-x": true, "-Xlinker": true, "-Xassembler": true,
	"-Xpreprocessor": true, "-L": true, "-l": true, "-T": true, "-u": true, "-z": true, "-e": true,
	"--param": true, "-aux-info": true, "-dumpdir": true, "-dumpbase": true, "-dumpbase-ext": true,
	"-wrapper": true, "--sysroot": false, "-B": true,
}

var sourceLang = map[string]string{
	".c": "c", ".i": "c",
	".cc": "c++", ".cpp": "c++", ".cxx": "c++", ".c++": "c++", ".C": "c++", ".cp": "c++", ".CPP": "c++", ".ii": "c++",
	".s": "asm", ".S": "asm", ".sx": "asm",
}

type parsedArgs struct {
	sources   []string
	langs     []string
	xlangs    []string // the -x language in force for each source, "" if none
	output    string
	compile   bool // -c
	other     bool // -E, -S, -M without -MD, -fsyntax-only, or an informational query
	lto       bool
	hasDebug  bool
	keepForC  []string // arguments to reuse for a separate compile of each source
	linkInput []string
}

// depOptions write a dependency file for make; a separate compile must
// not rewrite the build's own one.
var depOptions = map[string]bool{"-MD": true, "-MMD": true, "-MP": true, "-MG": true}

func parseArgs(args []string) parsedArgs {
	var p parsedArgs
	args = expandResponseFiles(args, 0)
	lang := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if (a == "-x" && i+1 < len(args)) || (strings.HasPrefix(a, "-x") && len(a) > 2) {
			if a == "-x" {
				lang = args[i+1]
				i++
			} else {
				lang = a[2:]
			}
			if lang == "none" {
				lang = ""
			}
			continue
		}
		if argOptions[a] && i+1 < len(args) {
			if a == "-o" {
				p.output = args[i+1]
			} else if a != "-l" && a != "-L" && a != "-Xlinker" && a != "-T" && a != "-u" && a != "-z" && a != "-e" &&
				a != "-MF" && a != "-MT" && a != "-MQ" {
				p.keepForC = append(p.keepForC, a, args[i+1])
			}
			i++
			continue
		}
		if strings.HasPrefix(a, "-o") && len(a) > 2 {
			p.output = a[2:] // -ofile
			continue
		}
		switch {
		case a == "-c":
			p.compile = true
		case a == "-E" || a == "-S" || a == "-M" || a == "-MM" || a == "-fsyntax-only" || a == "-v" || a == "--version" || a == "-###" ||
			strings.HasPrefix(a, "-print-") || strings.HasPrefix(a, "-dump") || strings.HasPrefix(a, "--print") || a == "--help":
			p.other = true
		case a == "-flto" || strings.HasPrefix(a, "-flto="):
			p.lto = true
		case a == "-fno-lto":
			p.lto = false
		case strings.HasPrefix(a, "-g"):
			// Only a level that includes types lets the builder see layout
			// changes; -g1, -gz, -gsplit-dwarf and the like do not count.
			switch a {
			case "-g", "-g2", "-g3", "-ggdb", "-ggdb2", "-ggdb3", "-gdwarf":
				p.hasDebug = true
			case "-g0", "-g1", "-ggdb0", "-ggdb1":
				p.hasDebug = false
			default:
				if strings.HasPrefix(a, "-gdwarf-") {
					p.hasDebug = true
				}
			}
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			if !strings.HasPrefix(a, "-Wl,") && !strings.HasPrefix(a, "-l") && !strings.HasPrefix(a, "-L") &&
				a != "-c" && a != "-shared" && a != "-static" && a != "-pie" && a != "-no-pie" && a != "-rdynamic" &&
				!depOptions[a] && !strings.HasPrefix(a, "-MF") && !strings.HasPrefix(a, "-MT") && !strings.HasPrefix(a, "-MQ") &&
				!strings.HasPrefix(a, "-Wp,-M") {
				p.keepForC = append(p.keepForC, a)
			}
			continue
		}
		l := lang
		if l == "" {
			l = sourceLang[filepath.Ext(a)]
		} else if strings.HasSuffix(l, "-header") {
			continue // a precompiled header, not an object
		} else if strings.HasPrefix(l, "c++") {
			l = "c++"
		} else if strings.HasPrefix(l, "assembler") {
			l = "asm"
		} else if strings.HasPrefix(l, "c") {
			l = "c"
		}
		if l == "c" || l == "c++" || l == "asm" {
			p.sources = append(p.sources, a)
			p.langs = append(p.langs, l)
			p.xlangs = append(p.xlangs, lang)
		} else {
			p.linkInput = append(p.linkInput, a)
		}
	}
	return p
}

// expandResponseFiles replaces each @FILE argument by the arguments the
// file holds, as gcc does; an @FILE that cannot be read stays as it is.
func expandResponseFiles(args []string, depth int) []string {
	var out []string
	for _, a := range args {
		if len(a) > 1 && a[0] == '@' && depth < 16 {
			if data, err := os.ReadFile(a[1:]); err == nil {
				out = append(out, expandResponseFiles(splitResponse(string(data)), depth+1)...)
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

// splitResponse splits a response file as libiberty's buildargv does:
// white space separates arguments, quotes group, a backslash escapes.
func splitResponse(s string) []string {
	var out []string
	var cur []byte
	inArg := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			cur, inArg = append(cur, s[i]), true
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur = append(cur, c)
			}
		case c == '\'' || c == '"':
			quote, inArg = c, true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			if inArg {
				out, cur, inArg = append(out, string(cur)), nil, false
			}
		default:
			cur, inArg = append(cur, c), true
		}
	}
	if inArg {
		out = append(out, string(cur))
	}
	return out
}

// WrapperMain runs one compiler invocation on behalf of a build: it runs
// the real compiler (EnvRealCompiler, else name) with ExtraFlags added and
// records each object in EnvLogDir. It returns the exit status.
func WrapperMain(name string, args []string, stdout, stderr io.Writer) int {
	real := os.Getenv(EnvRealCompiler)
	if real == "" {
		real = name
	}
	logDir := os.Getenv(EnvLogDir)
	p := parseArgs(args)
	if logDir == "" || p.other || len(p.sources) == 0 {
		return run(real, args, stdout, stderr)
	}
	extra := ExtraFlagsFor(os.Getenv(EnvMachine))
	if !p.hasDebug {
		// -g never changes the generated code; its type information lets
		// the builder see structure layout changes.
		extra = append(extra, "-g")
	}
	analysis := AnalysisFlagsFor(os.Getenv(EnvMachine))
	if os.Getenv(EnvStage) == "patched" && len(analysis) > 0 {
		// Nothing of the fixed build runs: its objects are the analysis ones.
		extra, analysis = append(extra, analysis...), nil
	}
	if code := run(real, append(append([]string(nil), args...), extra...), stdout, stderr); code != 0 {
		return code
	}
	cwd, _ := os.Getwd()
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(cwd, p)
	}
	for i, src := range p.sources {
		rec := CompileRecord{Dir: cwd, Source: abs(src), Lang: p.langs[i], Compiler: real, Args: args, LTO: p.lto}
		copyPath := filepath.Join(logDir, "objects", randomName(filepath.Base(src))+".o")
		if err := os.MkdirAll(filepath.Dir(copyPath), 0o755); err != nil {
			fmt.Fprintf(stderr, "hotpatch cc: %v\n", err)
			return 1
		}
		if p.compile {
			out := p.output
			if out == "" || len(p.sources) > 1 {
				out = strings.TrimSuffix(filepath.Base(src), filepath.Ext(src)) + ".o"
			}
			rec.Output = abs(out)
			if err := copyFile(rec.Output, copyPath); err != nil {
				fmt.Fprintf(stderr, "hotpatch cc: keep %s: %v\n", out, err)
				return 1
			}
		} else {
			// Compiled and linked in one step: compile the source again
			// on its own, with the same options, to have its object.
			rec.Output = abs(strings.TrimSuffix(filepath.Base(src), filepath.Ext(src)) + ".o")
			cargs := append(append([]string(nil), p.keepForC...), extra...)
			if p.xlangs[i] != "" {
				cargs = append(cargs, "-x", p.xlangs[i])
			}
			cargs = append(cargs, "-c", src, "-o", copyPath)
			if code := run(real, cargs, stdout, stderr); code != 0 {
				return code
			}
		}
		rec.Copy = copyPath
		if len(analysis) > 0 {
			// Compiled later, and only if the fixed build compiles the
			// source again (builder.analysisCompiles).
			cargs := append(append(append([]string(nil), p.keepForC...), extra...), analysis...)
			if p.xlangs[i] != "" {
				cargs = append(cargs, "-x", p.xlangs[i])
			}
			rec.AnalysisArgs = append(cargs, "-c", src)
			rec.Env = compileEnv()
		}
		rec.Time = time.Now().UnixNano()
		data, _ := json.Marshal(rec)
		recPath := filepath.Join(logDir, randomName("compile")+".json")
		if err := os.WriteFile(recPath, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "hotpatch cc: %v\n", err)
			return 1
		}
	}
	return 0
}

// compileEnv is the wrapper's environment without the wrapper's own
// variables and the ones that make gcc write a dependency file for make.
func compileEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case EnvLogDir, EnvRealCompiler, EnvMachine, EnvStage, "DEPENDENCIES_OUTPUT", "SUNPRO_DEPENDENCIES":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func run(name string, args []string, stdout, stderr io.Writer) int {
	cmd := exec.Command(name, args...)
	cmd.Stdin = os.Stdin
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintf(stderr, "hotpatch cc: %v\n", err)
		return 127
	}
	return 0
}

func randomName(base string) string {
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", base, os.Getpid(), hex.EncodeToString(b[:]))
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o644)
}

// analysisObject is the object the builder compares and takes code from.
func (r CompileRecord) analysisObject() string {
	if r.Analysis != "" {
		return r.Analysis
	}
	return r.Copy
}

// readRecords reads every record of a log directory.
func readRecords(dir string) ([]CompileRecord, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []CompileRecord
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var r CompileRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("compile record %s: %w", e.Name(), err)
		}
		out = append(out, r)
	}
	return out, nil
}
