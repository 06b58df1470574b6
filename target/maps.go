package target

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrNoProcess means the process does not exist.
var ErrNoProcess = errors.New("no such process")

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Perms      string // e.g. "r-xp"
	Offset     uint64
	Inode      uint64
	Path       string // file path, or a pseudo name like [stack] or [anon:NAME]
}

// Exec reports whether the mapping is executable.
func (m Mapping) Exec() bool { return len(m.Perms) > 2 && m.Perms[2] == 'x' }

// Contains reports whether addr lies in the mapping.
func (m Mapping) Contains(addr uint64) bool { return addr >= m.Start && addr < m.End }

// ReadMaps parses /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return nil, err
	}
	return ParseMaps(data)
}

// ParseMaps parses the text of a maps file.
func ParseMaps(data []byte) ([]Mapping, error) {
	var maps []Mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// address perms offset dev inode path
		fields := strings.Fields(line)
		if len(fields) < 5 {
			return nil, fmt.Errorf("malformed maps line %q", line)
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			return nil, fmt.Errorf("malformed maps range %q", fields[0])
		}
		var m Mapping
		var err1, err2, err3, err4 error
		m.Start, err1 = strconv.ParseUint(lo, 16, 64)
		m.End, err2 = strconv.ParseUint(hi, 16, 64)
		m.Offset, err3 = strconv.ParseUint(fields[2], 16, 64)
		m.Inode, err4 = strconv.ParseUint(fields[4], 10, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, fmt.Errorf("malformed maps line %q: %w", line, err)
		}
		m.Perms = fields[1]
		if len(fields) > 5 {
			// The path may contain spaces; take everything after the inode.
			idx := 0
			for i := 0; i < 5; i++ {
				j := strings.Index(line[idx:], fields[i])
				idx += j + len(fields[i])
			}
			m.Path = strings.TrimLeft(line[idx:], " ")
		}
		maps = append(maps, m)
	}
	return maps, sc.Err()
}

// AnonName returns NAME for a mapping named [anon:NAME], else "".
func (m Mapping) AnonName() string {
	if strings.HasPrefix(m.Path, "[anon:") && strings.HasSuffix(m.Path, "]") {
		return m.Path[len("[anon:") : len(m.Path)-1]
	}
	return ""
}

// Holes returns the unmapped gaps between mappings, within [lo, hi).
func Holes(maps []Mapping, lo, hi uint64) [][2]uint64 {
	var holes [][2]uint64
	cur := lo
	for _, m := range maps {
		if m.End <= cur {
			continue
		}
		if m.Start >= hi {
			break
		}
		if m.Start > cur {
			holes = append(holes, [2]uint64{cur, m.Start})
		}
		cur = m.End
	}
	if cur < hi {
		holes = append(holes, [2]uint64{cur, hi})
	}
	return holes
}
