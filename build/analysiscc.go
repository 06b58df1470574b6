package build

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Where the machine has analysis flags (aarch64), the original build
// compiles each source only as the target was and records the analysis
// compile. The analysis reads the original build's analysis object only
// for the (source, output) pairs the fixed build compiled again (analyse:
// the fixed build's records decide which units exist; the emitter and the
// register check see only those units), so only those are compiled, after
// the fixed build, in parallel.
//
// They must see the sources as the original build did. The files of the
// fix are put back as they were for the time of the compiles; so is a
// file that the fixed build wrote again and a compile reads: a generated
// source or header, kept when the original build wrote it, else taken
// from the user's tree, which the scratch tree is a copy of. Each compile writes its dependencies, and every file it read
// must be as it was before the fix was applied; otherwise the build
// stops (ErrUnsupported) rather than compare against another source.

// needsAnalysisCompiles reports whether the original build recorded
// analysis compiles.
func needsAnalysisCompiles(recs []CompileRecord) bool {
	for _, r := range recs {
		if len(r.AnalysisArgs) > 0 && r.Analysis == "" {
			return true
		}
	}
	return false
}

// fileStamp identifies a file's state by modification time and size.
type fileStamp struct {
	mtime time.Time
	size  int64
}

// savedFile is a file's content before the fix was applied.
type savedFile struct {
	exists bool
	data   []byte
	mode   fs.FileMode
	mtime  time.Time
}

// preFix is the scratch tree as the original build left it.
type preFix struct {
	at     time.Time
	start  time.Time            // when the original build started
	stamps map[string]fileStamp // every regular file, by path relative to the tree
	saved  map[string]*savedFile
}

// fsNow returns a time by the file system's clock, which may lag the
// system's by a tick: every file written before the call has an mtime at
// or before it, every file written after the call one after it.
func fsNow(dir string) (time.Time, error) {
	stamp := func(i int) (time.Time, error) {
		p := filepath.Join(dir, fmt.Sprintf(".hotpatch-clock-%d", i))
		defer os.Remove(p)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return time.Time{}, err
		}
		info, err := os.Stat(p)
		if err != nil {
			return time.Time{}, err
		}
		return info.ModTime(), nil
	}
	t, err := stamp(0)
	if err != nil {
		return time.Time{}, err
	}
	for i, deadline := 1, time.Now().Add(2*time.Second); time.Now().Before(deadline); i++ {
		if u, err := stamp(i); err != nil || u.After(t) {
			return t, err
		}
		time.Sleep(time.Millisecond)
	}
	return t, nil
}

// maxSaved bounds the size of a build-written file kept before the fix.
const maxSaved = 4 << 20

// snapshotTree records the tree before the fix is applied: the stamps of
// every file, the content of the fix's files and of the files the
// original build wrote (modified since buildStart) that are not objects,
// archives or large.
func (b *builder) snapshotTree(buildStart time.Time) (*preFix, error) {
	at, err := fsNow(filepath.Dir(b.tree))
	if err != nil {
		return nil, err
	}
	st := &preFix{at: at, start: buildStart, stamps: map[string]fileStamp{}, saved: map[string]*savedFile{}}
	for _, f := range b.diff.Files {
		rel := filepath.Clean(f.Path)
		sf := &savedFile{}
		if info, err := os.Stat(filepath.Join(b.tree, rel)); err == nil && info.Mode().IsRegular() {
			data, err := os.ReadFile(filepath.Join(b.tree, rel))
			if err != nil {
				return nil, err
			}
			sf = &savedFile{exists: true, data: data, mode: info.Mode().Perm(), mtime: info.ModTime()}
		}
		st.saved[rel] = sf
	}
	err = filepath.Walk(b.tree, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(b.tree, p)
		st.stamps[rel] = fileStamp{info.ModTime(), info.Size()}
		if _, ok := st.saved[rel]; ok || !info.ModTime().After(buildStart) || info.Size() > maxSaved {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.HasPrefix(data, []byte("\x7fELF")) || bytes.HasPrefix(data, []byte("!<arch>\n")) {
			return nil
		}
		st.saved[rel] = &savedFile{exists: true, data: data, mode: info.Mode().Perm(), mtime: info.ModTime()}
		return nil
	})
	return st, err
}

// analysisCompiles runs the recorded analysis compile of the original
// build's object of every (source, output) the fixed build compiled, and
// sets its Analysis.
func (b *builder) analysisCompiles(ctx context.Context, orig, patched []CompileRecord, st *preFix) error {
	last := map[[2]string]int{}
	for i, r := range orig {
		k := [2]string{r.Source, r.Output}
		if j, ok := last[k]; !ok || r.Time > orig[j].Time {
			last[k] = i
		}
	}
	var todo []*CompileRecord
	seen := map[int]bool{}
	for _, r := range patched {
		if i, ok := last[[2]string{r.Source, r.Output}]; ok && !seen[i] && len(orig[i].AnalysisArgs) > 0 && orig[i].Analysis == "" {
			seen[i] = true
			todo = append(todo, &orig[i])
		}
	}
	if len(todo) == 0 {
		return nil
	}
	// The fix's files as they were, then whatever else a compile read
	// that the fixed build wrote again, until every input is as before.
	restore := map[string]bool{}
	for _, f := range b.diff.Files {
		restore[filepath.Clean(f.Path)] = true
	}
	for round := 0; ; round++ {
		undo, err := b.restoreFiles(st, restore)
		if err != nil {
			undo()
			return err
		}
		changed, err := b.runAnalysisCompiles(ctx, todo, st, restore)
		undo()
		if err != nil {
			return err
		}
		if len(changed) == 0 {
			return nil
		}
		var missing []string
		for _, rel := range changed {
			if st.saved[rel] == nil {
				st.saved[rel] = b.fromSource(st, rel)
			}
			if st.saved[rel] == nil || round > 0 {
				missing = append(missing, rel)
			}
			restore[rel] = true
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return fmt.Errorf("%w: the fixed build wrote %s again, which the original build's analysis compile reads; its original content was not kept", ErrUnsupported, strings.Join(missing, ", "))
		}
	}
}

// fromSource returns a file of the tree as it was before the fix when
// the original build did not write it: the user's tree, which the scratch
// tree is a copy of. It is nil otherwise.
func (b *builder) fromSource(st *preFix, rel string) *savedFile {
	stamp, ok := st.stamps[rel]
	if !ok || stamp.mtime.After(st.start) {
		return nil
	}
	p := filepath.Join(b.opts.Src, rel)
	info, err := os.Stat(p)
	if err != nil || !info.Mode().IsRegular() || info.Size() != stamp.size {
		return nil
	}
	data, err := os.ReadFile(p)
	if err != nil || int64(len(data)) != stamp.size {
		return nil
	}
	return &savedFile{exists: true, data: data, mode: info.Mode().Perm(), mtime: stamp.mtime}
}

// restoreFiles puts the files back as they were before the fix; the
// function it returns puts the fixed build's state back.
func (b *builder) restoreFiles(st *preFix, rels map[string]bool) (func(), error) {
	type current struct {
		rel   string
		saved *savedFile
	}
	var done []current
	undo := func() {
		for i := len(done) - 1; i >= 0; i-- {
			c := done[i]
			p := filepath.Join(b.tree, c.rel)
			if !c.saved.exists {
				os.Remove(p)
				continue
			}
			os.WriteFile(p, c.saved.data, c.saved.mode)
			os.Chmod(p, c.saved.mode)
			os.Chtimes(p, c.saved.mtime, c.saved.mtime)
		}
	}
	var keys []string
	for rel := range rels {
		keys = append(keys, rel)
	}
	sort.Strings(keys)
	for _, rel := range keys {
		was := st.saved[rel]
		p := filepath.Join(b.tree, rel)
		now := &savedFile{}
		if info, err := os.Stat(p); err == nil && info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return undo, err
			}
			now = &savedFile{exists: true, data: data, mode: info.Mode().Perm(), mtime: info.ModTime()}
		}
		if was.exists == now.exists && bytes.Equal(was.data, now.data) {
			continue
		}
		done = append(done, current{rel, now})
		if !was.exists {
			if err := os.Remove(p); err != nil {
				return undo, err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return undo, err
		}
		if err := os.WriteFile(p, was.data, was.mode); err != nil {
			return undo, err
		}
		os.Chtimes(p, was.mtime, was.mtime)
	}
	return undo, nil
}

// runAnalysisCompiles compiles, up to Jobs at a time, and returns the
// files of the tree that a compile read and that are not as they were
// before the fix (nor put back as they were).
func (b *builder) runAnalysisCompiles(ctx context.Context, todo []*CompileRecord, st *preFix, restored map[string]bool) ([]string, error) {
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		firstEr error
		changed = map[string]bool{}
	)
	sem := make(chan struct{}, b.opts.Jobs)
	for _, r := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func(r *CompileRecord) {
			defer func() { <-sem; wg.Done() }()
			out := strings.TrimSuffix(r.Copy, ".o") + ".analysis.o"
			dep := strings.TrimSuffix(out, ".o") + ".d"
			args := append(append([]string(nil), r.AnalysisArgs...), "-o", out, "-MD", "-MF", dep, "-MT", "hotpatch-analysis")
			cmd := exec.CommandContext(ctx, r.Compiler, args...)
			cmd.Dir = r.Dir
			cmd.Env = r.Env
			if cmd.Env == nil {
				cmd.Env = compileEnv()
			}
			output, err := cmd.CombinedOutput()
			var bad []string
			if err == nil {
				var deps []byte
				if deps, err = os.ReadFile(dep); err == nil {
					bad = b.changedInputs(r.Dir, parseDeps(deps), st, restored)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstEr == nil {
					firstEr = &CommandError{Stage: "original (analysis compile of " + r.Source + ")", Command: r.Compiler + " " + strings.Join(args, " "), Output: strings.TrimSpace(string(output)), Err: err}
				}
				return
			}
			r.Analysis = out
			for _, rel := range bad {
				changed[rel] = true
			}
		}(r)
	}
	wg.Wait()
	if firstEr != nil {
		return nil, firstEr
	}
	var out []string
	for rel := range changed {
		out = append(out, rel)
	}
	sort.Strings(out)
	return out, nil
}

// changedInputs returns the dependencies (relative to the tree) that are
// not as they were before the fix. A file outside the tree counts as
// changed, under its absolute path, when it was modified after that.
func (b *builder) changedInputs(dir string, deps []string, st *preFix, restored map[string]bool) []string {
	var out []string
	for _, d := range deps {
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		if real, err := filepath.EvalSymlinks(d); err == nil {
			d = real // the tree's links lead into the tree
		}
		info, err := os.Stat(d)
		rel, in := within(b.tree, d)
		if !in {
			if err != nil || info.ModTime().After(st.at) {
				out = append(out, d)
			}
			continue
		}
		rel = filepath.Clean(rel)
		if restored[rel] {
			continue
		}
		was, ok := st.stamps[rel]
		if !ok || err != nil || !info.ModTime().Equal(was.mtime) || info.Size() != was.size {
			out = append(out, rel)
		}
	}
	return out
}

// parseDeps reads the prerequisites of a make rule as gcc writes it
// (-MD -MT target): backslash-newline continues, "\ " is a space in a
// name and "$$" a dollar sign.
func parseDeps(data []byte) []string {
	s := strings.ReplaceAll(string(data), "\\\n", " ")
	if i := strings.Index(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && (s[i+1] == ' ' || s[i+1] == '#' || s[i+1] == '\\'):
			i++
			cur.WriteByte(s[i])
		case c == '$' && i+1 < len(s) && s[i+1] == '$':
			i++
			cur.WriteByte('$')
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}
