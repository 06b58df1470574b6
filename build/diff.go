package build

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Diff is a parsed unified diff (git or diff -ru), with paths stripped of
// their first component as patch -p1 does.
type Diff struct {
	Header string // text before the first file, e.g. a commit message
	Files  []*FileDiff
}

// FileDiff is the change to one file.
type FileDiff struct {
	Path    string // relative to the tree root
	New     bool   // created by the diff
	Deleted bool
	Hunks   []Hunk
}

// Hunk is one @@ block.
type Hunk struct {
	OldStart, OldLen int
	NewStart, NewLen int
	Lines            []string // each with its ' ', '-' or '+' prefix
	line             int      // line of the @@ in the diff

	// Where Apply put the hunk (0-based lines of the old and new file);
	// it may be shifted from the header's numbers.
	applied      bool
	oldAt, newAt int
}

var hunkRE = regexp.MustCompile(`^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@`)

// cveRE matches CVE ids.
var cveRE = regexp.MustCompile(`CVE-\d{4}-\d{4,}`)

// ParseDiff parses a unified diff.
func ParseDiff(data []byte) (*Diff, error) {
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	d := &Diff{}
	var header []string
	var cur *FileDiff
	inHeader := true
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "diff --git ") || strings.HasPrefix(l, "diff -"):
			inHeader = false
			cur = nil
		case strings.HasPrefix(l, "--- ") && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "+++ "):
			inHeader = false
			oldPath, newPath := diffPath(l[4:]), diffPath(lines[i+1][4:])
			// diff -N dates the side a file is missing from at the epoch.
			if epochStamp(l[4:]) {
				oldPath = ""
			}
			if epochStamp(lines[i+1][4:]) {
				newPath = ""
			}
			cur = &FileDiff{Path: newPath}
			switch {
			case newPath == "":
				cur.Deleted, cur.Path = true, oldPath
			case oldPath == "":
				cur.New = true
			}
			if cur.Path == "" {
				return nil, &DiffError{File: "?", Line: i + 1, Msg: "file header names no path"}
			}
			d.Files = append(d.Files, cur)
			i++
		case strings.HasPrefix(l, "@@ "):
			if cur == nil {
				return nil, &DiffError{File: "?", Line: i + 1, Msg: "hunk without a file header"}
			}
			m := hunkRE.FindStringSubmatch(l)
			if m == nil {
				return nil, &DiffError{File: cur.Path, Line: i + 1, Msg: "bad hunk header " + strconv.Quote(l)}
			}
			h := Hunk{OldStart: atoi(m[1]), OldLen: atoiDef(m[2], 1), NewStart: atoi(m[3]), NewLen: atoiDef(m[4], 1), line: i + 1}
			oldLeft, newLeft := h.OldLen, h.NewLen
			for i+1 < len(lines) && (oldLeft > 0 || newLeft > 0) {
				i++
				b := lines[i]
				if b == "" { // some tools drop the space of an empty context line
					b = " "
				}
				switch b[0] {
				case ' ':
					oldLeft--
					newLeft--
				case '-':
					oldLeft--
				case '+':
					newLeft--
				default:
					return nil, &DiffError{File: cur.Path, Line: i + 1, Msg: "hunk is shorter than its header says"}
				}
				// Lines keep their newline unless the diff says the file
				// ends without one.
				if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "\\") {
					b += "\n"
				} else {
					i++
				}
				h.Lines = append(h.Lines, b)
			}
			if oldLeft != 0 || newLeft != 0 {
				return nil, &DiffError{File: cur.Path, Line: h.line, Msg: "hunk is shorter than its header says"}
			}
			cur.Hunks = append(cur.Hunks, h)
		case strings.HasPrefix(l, "Binary files ") || strings.HasPrefix(l, "GIT binary patch"):
			return nil, &DiffError{File: "?", Line: i + 1, Msg: "binary diffs are not supported"}
		case strings.HasPrefix(l, "rename from ") || strings.HasPrefix(l, "copy from "):
			return nil, &DiffError{File: strings.SplitN(l, " from ", 2)[1], Line: i + 1, Msg: "renames and copies are not supported"}
		default:
			if inHeader {
				header = append(header, l)
			}
		}
	}
	if len(d.Files) == 0 {
		return nil, &DiffError{File: "?", Msg: "no file changes found (is it a unified diff?)"}
	}
	d.Header = strings.TrimSpace(strings.Join(header, "\n"))
	return d, nil
}

// diffPath strips a --- or +++ path of its timestamp and first component.
func diffPath(s string) string {
	if i := strings.IndexByte(s, '\t'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	if uq, err := strconv.Unquote(s); err == nil && strings.HasPrefix(s, `"`) {
		s = uq
	}
	if s == "/dev/null" {
		return ""
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return filepath.Clean(s[i+1:])
	}
	return filepath.Clean(s)
}

// epochStamp reports a --- or +++ line whose time stamp is the epoch, in
// any time zone.
func epochStamp(s string) bool {
	i := strings.IndexByte(s, '\t')
	if i < 0 {
		return false
	}
	ts := strings.TrimSpace(s[i+1:])
	for _, layout := range []string{"2006-01-02 15:04:05.999999999 -0700", "2006-01-02 15:04:05 -0700", "Mon Jan _2 15:04:05 2006"} {
		if t, err := time.Parse(layout, ts); err == nil {
			return t.Unix() == 0
		}
	}
	return false
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func atoiDef(s string, def int) int {
	if s == "" {
		return def
	}
	return atoi(s)
}

// CVEs returns the CVE ids named in the diff's header, in order, once each.
func (d *Diff) CVEs() []string {
	var out []string
	seen := map[string]bool{}
	for _, id := range cveRE.FindAllString(d.Header, -1) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// Apply applies the diff to the tree at root. Hunks must match exactly,
// at their line or shifted by up to maxShift lines.
func (d *Diff) Apply(root string) error {
	for _, f := range d.Files {
		path := filepath.Join(root, f.Path)
		if !strings.HasPrefix(path, filepath.Clean(root)+string(filepath.Separator)) || !resolvesInside(root, path) {
			return &DiffError{File: f.Path, Msg: "path leaves the source tree"}
		}
		if f.Deleted {
			if err := os.Remove(path); err != nil {
				return &DiffError{File: f.Path, Msg: err.Error()}
			}
			continue
		}
		var old []string
		mode := os.FileMode(0o644)
		if !f.New {
			data, err := os.ReadFile(path)
			if err != nil {
				return &DiffError{File: f.Path, Msg: err.Error()}
			}
			if st, err := os.Stat(path); err == nil {
				mode = st.Mode().Perm()
			}
			old = splitLines(data)
		} else if _, err := os.Stat(path); err == nil {
			return &DiffError{File: f.Path, Msg: "the diff creates it but it exists"}
		}
		out, err := f.apply(old)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		// Remove first so that a hard link into the user's tree is never
		// written through.
		os.Remove(path)
		if err := os.WriteFile(path, []byte(strings.Join(out, "")), mode); err != nil {
			return err
		}
	}
	return nil
}

// resolvesInside reports whether path's directory, with symbolic links
// followed, is inside root: a diff is never applied through a link.
func resolvesInside(root, path string) bool {
	r, err := filepath.EvalSymlinks(root)
	if err != nil {
		return false
	}
	d := filepath.Dir(path)
	for {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		d = filepath.Dir(d) // a directory the diff creates
	}
	real, err := filepath.EvalSymlinks(d)
	if err != nil {
		return false
	}
	return real == r || strings.HasPrefix(real, r+string(filepath.Separator))
}

const maxShift = 200

// splitLines splits keeping each line's newline.
func splitLines(data []byte) []string {
	var out []string
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, string(data))
			break
		}
		out = append(out, string(data[:i+1]))
		data = data[i+1:]
	}
	return out
}

func (f *FileDiff) apply(old []string) ([]string, error) {
	var out []string
	pos := 0 // next line of old not yet copied
	shift := 0
	for hi, h := range f.Hunks {
		var want, repl []string
		for _, l := range h.Lines {
			switch l[0] {
			case ' ':
				want = append(want, l[1:])
				repl = append(repl, l[1:])
			case '-':
				want = append(want, l[1:])
			case '+':
				repl = append(repl, l[1:])
			}
		}
		start := h.OldStart - 1
		if h.OldLen == 0 {
			start = h.OldStart // inserting after line OldStart
		}
		at := -1
		for delta := 0; delta <= maxShift && at < 0; delta++ {
			for _, s := range []int{start + shift + delta, start + shift - delta} {
				if s >= pos && matchAt(old, s, want) {
					at = s
					break
				}
			}
		}
		if at < 0 {
			return nil, &DiffError{File: f.Path, Line: h.line, Msg: fmt.Sprintf("hunk %d does not match the source (at line %d)", hi+1, h.OldStart)}
		}
		shift = at - start
		out = append(out, old[pos:at]...)
		f.Hunks[hi].applied, f.Hunks[hi].oldAt, f.Hunks[hi].newAt = true, at, len(out)
		out = append(out, repl...)
		pos = at + len(want)
	}
	out = append(out, old[pos:]...)
	return out, nil
}

func matchAt(old []string, at int, want []string) bool {
	if at < 0 || at+len(want) > len(old) {
		return false
	}
	for i, w := range want {
		if strings.TrimSuffix(old[at+i], "\n") != strings.TrimSuffix(w, "\n") {
			return false
		}
	}
	return true
}

// LineMap maps line numbers of a file before the diff to the same line
// after it. It returns 0 for lines the diff removes or changes.
func (f *FileDiff) LineMap() func(int) int {
	type span struct{ oldFrom, oldTo, shift int } // unchanged lines [oldFrom, oldTo) move by shift
	var spans []span
	shift, oldLine := 0, 1
	for _, h := range f.Hunks {
		o, n := h.start()
		spans = append(spans, span{oldLine, o, shift})
		for _, l := range h.Lines {
			switch l[0] {
			case ' ':
				spans = append(spans, span{o, o + 1, n - o})
				o++
				n++
			case '-':
				o++
			case '+':
				n++
			}
		}
		shift, oldLine = n-o, o
	}
	last := span{oldLine, 1 << 30, shift}
	return func(line int) int {
		for _, s := range spans {
			if line >= s.oldFrom && line < s.oldTo {
				return line + s.shift
			}
		}
		if line >= last.oldFrom {
			return line + last.shift
		}
		return 0
	}
}

// start returns the old and new line numbers of the hunk's first line:
// where Apply put it, else where its header says.
func (h *Hunk) start() (o, n int) {
	if h.applied {
		return h.oldAt + 1, h.newAt + 1
	}
	o, n = h.OldStart, h.NewStart
	if h.OldLen == 0 {
		o++
	}
	if h.NewLen == 0 {
		n++
	}
	return o, n
}

// ChangedLines returns the lines the diff removes (numbered in the old
// file) and adds (numbered in the new file).
func (f *FileDiff) ChangedLines() (removed, added map[int]bool) {
	removed, added = map[int]bool{}, map[int]bool{}
	for _, h := range f.Hunks {
		o, n := h.start()
		for _, l := range h.Lines {
			switch l[0] {
			case ' ':
				o++
				n++
			case '-':
				removed[o] = true
				o++
			case '+':
				added[n] = true
				n++
			}
		}
	}
	return removed, added
}
