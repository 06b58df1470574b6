package patchfile

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestZZTiming(t *testing.T) {
	dir := os.Getenv("HOME") + "/.cache/go-build/fuzz/github.com/hotpatch/hotpatch/patchfile/FuzzLoad"
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		lines := strings.SplitN(string(b), "\n", 2)
		s := strings.TrimSpace(lines[1])
		s = strings.TrimSuffix(strings.TrimPrefix(s, "[]byte("), ")")
		data, err := strconv.Unquote(s)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = Load([]byte(data))
		d := time.Since(start)
		if d > time.Millisecond {
			t.Logf("%s %d bytes %v: %v", e.Name(), len(data), d, err)
		}
	}
}
