package target

import (
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

var (
	// ErrImageNotFound means no mapping of the process has the build-id.
	ErrImageNotFound = errors.New("target image not mapped in process")
	// ErrNoBuildID means an ELF file has no NT_GNU_BUILD_ID note.
	ErrNoBuildID = errors.New("no build-id note")
)

// Image is an ELF file mapped into a process.
type Image struct {
	Path    string // path as shown in maps
	File    string // path this process can open (via /proc/PID/map_files or /proc/PID/root)
	BuildID string // lowercase hex; "" when the file has none
	Bias    uint64 // runtime address = link-time address + Bias
	Lo, Hi  uint64 // span of all its mappings
	Maps    []Mapping
	Main    bool // the process's executable
}

// Images lists the ELF images mapped in pid, in address order.
func Images(pid int, maps []Mapping) ([]*Image, error) {
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	byPath := map[string]*Image{}
	var order []*Image
	for _, m := range maps {
		if m.Inode == 0 || !strings.HasPrefix(m.Path, "/") {
			continue
		}
		img := byPath[m.Path]
		if img == nil {
			img = &Image{Path: m.Path, Lo: m.Start, Main: m.Path == exe}
			byPath[m.Path] = img
			order = append(order, img)
		}
		img.Maps = append(img.Maps, m)
		if m.End > img.Hi {
			img.Hi = m.End
		}
	}
	var out []*Image
	for _, img := range order {
		if err := img.load(pid); err != nil {
			continue // not an ELF file (a mapped data file); irrelevant here
		}
		out = append(out, img)
	}
	return out, nil
}

// FindImage returns the image of pid whose build-id is buildID.
func FindImage(pid int, maps []Mapping, buildID string) (*Image, error) {
	imgs, err := Images(pid, maps)
	if err != nil {
		return nil, err
	}
	for _, img := range imgs {
		if img.BuildID == buildID {
			return img, nil
		}
	}
	return nil, fmt.Errorf("build-id %s in pid %d: %w (is the process running the binary the patch was built for?)", buildID, pid, ErrImageNotFound)
}

func (img *Image) load(pid int) error {
	first := img.Maps[0]
	img.File = fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, first.Start, first.End)
	f, err := elf.Open(img.File)
	if err != nil {
		alt := filepath.Join(fmt.Sprintf("/proc/%d/root", pid), img.Path)
		if f, err = elf.Open(alt); err != nil {
			return err
		}
		img.File = alt
	}
	defer f.Close()
	img.BuildID, _ = BuildID(f)
	// The lowest mapping maps the PT_LOAD with the lowest file offset.
	var minLoad *elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && (minLoad == nil || p.Vaddr < minLoad.Vaddr) {
			minLoad = p
		}
	}
	if minLoad == nil {
		return errors.New("no PT_LOAD segment")
	}
	for _, m := range img.Maps {
		if m.Offset == minLoad.Off&^0xfff {
			img.Bias = m.Start - minLoad.Vaddr&^0xfff
			return nil
		}
	}
	return errors.New("cannot find load bias")
}

// BuildID returns the NT_GNU_BUILD_ID of an ELF file as lowercase hex.
func BuildID(f *elf.File) (string, error) {
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		if id, ok := findBuildID(s.Open()); ok {
			return id, nil
		}
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		if id, ok := findBuildID(p.Open()); ok {
			return id, nil
		}
	}
	return "", ErrNoBuildID
}

func findBuildID(r interface{ Read([]byte) (int, error) }) (string, bool) {
	data := make([]byte, 0, 256)
	buf := make([]byte, 4096)
	for len(data) < 1<<16 {
		n, err := r.Read(buf)
		data = append(data, buf[:n]...)
		if err != nil {
			break
		}
	}
	for len(data) >= 12 {
		namesz := le32(data[0:])
		descsz := le32(data[4:])
		typ := le32(data[8:])
		off := 12 + align4(namesz)
		end := off + align4(descsz)
		if namesz > 1<<16 || descsz > 1<<16 || end > uint64(len(data)) {
			return "", false
		}
		if typ == 3 && namesz == 4 && string(data[12:15]) == "GNU" {
			return hex.EncodeToString(data[off : off+descsz]), true
		}
		data = data[end:]
	}
	return "", false
}

func le32(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24
}
func align4(n uint64) uint64 { return (n + 3) &^ 3 }

// BuildIDOfFile reads the build-id of the ELF file at path.
func BuildIDOfFile(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return BuildID(f)
}

// ProcessesMapping lists the PIDs whose maps contain an image with buildID.
func ProcessesMapping(buildID string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == self {
			continue
		}
		maps, err := ReadMaps(pid)
		if err != nil {
			continue
		}
		if _, err := FindImage(pid, maps, buildID); err == nil {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}
