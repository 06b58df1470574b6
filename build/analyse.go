package build

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/hotpatch/hotpatch/patchfile"
)

// analyse compares the two builds and makes the patch image.
func (b *builder) analyse(origRecs, patchedRecs []CompileRecord, res *Result) error {
	om, pm := latest(origRecs), latest(patchedRecs)
	created := map[string]bool{}
	for _, f := range b.diff.Files {
		if f.New {
			created[filepath.Clean(f.Path)] = true
		}
	}
	bySource := map[string][]*unit{}
	var sources []string
	for _, k := range sortedKeys(pm) {
		pr := pm[k]
		or, hasOrig := om[k]
		if hasOrig && sameFile(or.analysisObject(), pr.analysisObject()) {
			continue
		}
		if pr.LTO {
			return fmt.Errorf("%w: %s is compiled with -flto; link-time optimization mixes functions across files, build without it", ErrUnsupported, pr.Source)
		}
		if pr.Lang == "asm" {
			return fmt.Errorf("%w: %s is assembly and it changed; only C and C++ changes can be patched", ErrUnsupported, pr.Source)
		}
		if !hasOrig && !created[filepath.Clean(pr.Source)] {
			// Without the original object its changes cannot be seen; taken
			// for a new file's functions they would be left out.
			return fmt.Errorf("%w: the original build did not compile %s into %s (its object looked up to date), the fixed build did; clean the tree (e.g. make clean) and build again", ErrUnsupported, pr.Source, pr.Output)
		}
		po, err := loadObject(pr.analysisObject(), b.tgt.mach)
		if err != nil {
			return err
		}
		po.rec, po.lang = pr, pr.Lang
		var oo, real *object
		if hasOrig {
			if oo, err = loadObject(or.analysisObject(), b.tgt.mach); err != nil {
				return err
			}
			oo.rec, oo.lang = or, or.Lang
			if or.Analysis != "" {
				if real, err = loadObject(or.Copy, b.tgt.mach); err != nil {
					return err
				}
			}
		}
		u := newUnit(pr.Source, oo, po)
		u.real = real
		u.compare()
		if _, ok := bySource[pr.Source]; !ok {
			sources = append(sources, pr.Source)
		}
		bySource[pr.Source] = append(bySource[pr.Source], u)
	}
	sort.Strings(sources)

	var selected []*unit
	var reps []*replacement
	observed := map[*symbol]uint64{}
	for _, src := range sources {
		var firstErr error
		chosen := false
		covered := map[uint64]bool{}
		for _, u := range bySource[src] {
			if u.orig == nil {
				selected, chosen = append(selected, u), true
				break
			}
			if !b.inTarget(u) {
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s (object %s): not part of the target", u.source, u.patched.rec.Output))
				continue
			}
			b.splitLineOnly(u)
			rs, obs, err := b.replacements(u)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			if chosen {
				// Another object of the source (a static and a shared build,
				// or one compiled twice with other macros into functions of
				// other names) counts only for functions not yet replaced.
				fresh := false
				for _, r := range rs {
					fresh = fresh || !covered[r.tsym.Value]
				}
				if !fresh {
					continue
				}
			}
			for _, r := range rs {
				covered[r.tsym.Value] = true
			}
			for k, v := range obs {
				observed[k] = v
			}
			for _, p := range u.lineOnly {
				res.LineOnly = append(res.LineOnly, u.qualified(p))
			}
			selected, reps, chosen = append(selected, u), append(reps, rs...), true
		}
		if !chosen && firstErr != nil {
			return firstErr
		}
	}

	var refusals []Refusal
	for _, u := range selected {
		u.checkStaticLocals()
		u.checkLayouts()
		refusals = append(refusals, u.refusals...)
	}
	if len(reps) == 0 && len(refusals) == 0 {
		msg := "the fix changes no function of " + b.opts.Target
		if len(res.LineOnly) > 0 {
			msg += fmt.Sprintf(" (only line numbers change in %v)", res.LineOnly)
		}
		if len(res.Skipped) > 0 {
			msg += fmt.Sprintf("; not part of the target: %v", res.Skipped)
		}
		return fmt.Errorf("%w: %s", ErrNoChanges, msg)
	}

	// An inline or template function changed in a header is compiled into
	// several objects; the target keeps one copy, replaced once.
	seenAddr := map[uint64]bool{}
	var uniq []*replacement
	for _, r := range reps {
		if !seenAddr[r.tsym.Value] {
			seenAddr[r.tsym.Value] = true
			uniq = append(uniq, r)
		}
	}
	reps = uniq
	used := map[string]bool{}
	for _, r := range reps {
		r.newName = r.tsym.Name + ".hotpatch"
		for i := 2; used[r.newName]; i++ {
			r.newName = fmt.Sprintf("%s.hotpatch.%d", r.tsym.Name, i)
		}
		used[r.newName] = true
	}
	e := newEmitter(b, selected, reps, observed)
	if err := e.run(); err != nil {
		return err
	}
	refusals = append(refusals, e.refusals...)
	refusals = append(refusals, b.checkRegisterUse(selected, reps)...)
	var hard []Refusal
	for _, r := range refusals {
		if r.Warning && b.opts.Force {
			res.Warnings = append(res.Warnings, r)
		} else {
			hard = append(hard, r)
		}
	}
	if len(hard) > 0 {
		return &RefusalError{Refusals: hard}
	}
	if len(reps) == 0 {
		return fmt.Errorf("%w: the fix changes no function of %s", ErrNoChanges, b.opts.Target)
	}

	abs, _ := filepath.Abs(b.opts.Target)
	sum := sha256.Sum256(b.raw)
	meta := patchfile.Metadata{ID: b.opts.ID, TargetBuildID: b.tgt.buildID, TargetPath: abs, Description: b.opts.Description, CVEs: b.diff.CVEs()}
	sort.Slice(reps, func(i, j int) bool { return reps[i].newName < reps[j].newName })
	var fnMeta []map[string]any
	for _, r := range reps {
		h := sha256.Sum256(r.code)
		f := patchfile.Function{Old: r.tsym.Name, OldAddr: r.tsym.Value, OldSize: r.tsym.Size,
			OldHash: "sha256:" + hex.EncodeToString(h[:]), New: r.newName}
		if r.tsym.Bind == elf.STB_LOCAL {
			f.OldFile = r.tsym.File
		}
		meta.Functions = append(meta.Functions, f)
		rep := Function{Name: r.tsym.Name, File: r.u.source, New: r.newName, OldSize: r.tsym.Size, NewSize: r.patched.size}
		res.Functions = append(res.Functions, rep)
		fnMeta = append(fnMeta, map[string]any{"name": rep.Name, "source": rep.File, "old_size": rep.OldSize, "new_size": rep.NewSize})
	}
	res.Added, res.NewData, res.Constants = e.added, e.newData, e.consts
	res.Bindings = describeBinding(e.bindings)
	builderMeta := map[string]any{
		"diff":        filepath.Base(b.opts.Diff),
		"diff_sha256": hex.EncodeToString(sum[:]),
		"build":       b.opts.BuildCmd,
		"functions":   fnMeta,
	}
	if len(res.Added) > 0 {
		builderMeta["new_functions"] = res.Added
	}
	if len(res.NewData) > 0 {
		builderMeta["new_data"] = res.NewData
	}
	if len(res.LineOnly) > 0 {
		builderMeta["line_only"] = res.LineOnly
	}
	if len(res.Bindings) > 0 {
		builderMeta["local_bindings"] = res.Bindings
	}
	if len(res.Warnings) > 0 {
		var ws []string
		for _, w := range res.Warnings {
			ws = append(ws, w.Kind+": "+w.String())
		}
		builderMeta["accepted_warnings"] = ws
	}
	meta.Builder = builderMeta
	img, err := patchfile.Pack(e.out.bytes(), meta)
	if err != nil {
		return fmt.Errorf("pack patch object: %w", err)
	}
	res.Image, res.Meta = img, meta
	return nil
}

// inTarget reports whether the original object was linked into the
// target: every global it defines is there, and so is at least one of its
// local symbols under its file name.
func (b *builder) inTarget(u *unit) bool {
	found, locals, localFound := 0, 0, 0
	for _, s := range u.orig.syms {
		if !s.defined() || s.sec == nil || s.name == "" || (!isFunc(s) && s.typ != elf.STT_OBJECT) || isCold(s.name) {
			continue
		}
		if s.local() {
			if generatedConst(s) {
				continue
			}
			locals++
			if _, err := b.tgt.syms.Lookup(s.name, u.orig.file); err == nil {
				localFound++
			}
			continue
		}
		if _, err := b.tgt.syms.Lookup(s.name, ""); err != nil {
			if s.bind != elf.STB_WEAK {
				return false
			}
			continue
		}
		found++
	}
	if locals > 0 && localFound == 0 {
		return false
	}
	return found+localFound > 0
}

// replacements checks each changed function against the target (run-pre)
// and names its new version.
func (b *builder) replacements(u *unit) ([]*replacement, map[*symbol]uint64, error) {
	var out []*replacement
	observed := map[*symbol]uint64{}
	for _, p := range u.changed {
		o := u.corr[p]
		ts, err := b.tgt.lookup(o, u.orig.file)
		if err != nil {
			return nil, nil, &MismatchError{Function: o.name, File: localFile(o, u.orig.file), Detail: fmt.Sprintf("changed function not found in the target: %v", err)}
		}
		code, ok := b.tgt.read(ts.Value, ts.Size)
		if !ok {
			return nil, nil, &MismatchError{Function: o.name, File: localFile(o, u.orig.file), Detail: "its bytes are not in a loaded segment of the target"}
		}
		// Run-pre matches the object compiled as the target was; the
		// analysis object has the same functions and variables by name.
		fn := o
		if u.real != nil {
			if fn = u.real.byName[o.name]; fn == nil || !fn.defined() || !isFunc(fn) {
				return nil, nil, &MismatchError{Function: o.name, File: localFile(o, u.orig.file), Detail: "the original build's own object (compiled as the target was) has no such function"}
			}
		}
		obs, err := b.runPre(u, fn, code, ts.Value)
		if err != nil {
			return nil, nil, err
		}
		for k, v := range obs {
			if u.real != nil {
				if k = u.orig.byName[k.name]; k == nil {
					continue
				}
			}
			observed[k] = v
		}
		out = append(out, &replacement{u: u, patched: p, orig: o, tsym: ts, code: code})
	}
	return out, observed, nil
}
