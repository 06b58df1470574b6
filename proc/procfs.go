package proc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// taskFile reads /proc/PID/task/TID/name.
func taskFile(pid, tid int, name string) ([]byte, error) {
	return os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/" + name)
}

// taskState returns the scheduler state letter of a thread (R, S, D, t,
// Z, ...), or 0 when it is gone or its stat cannot be read.
func taskState(pid, tid int) byte {
	b, err := taskFile(pid, tid, "stat")
	if err != nil {
		return 0
	}
	// The command name in parentheses may hold anything: the state
	// follows the last closing one.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// statusField returns the value of a field of a thread's status file.
func statusField(pid, tid int, field string) (string, error) {
	b, err := taskFile(pid, tid, "status")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s field in the status of thread %d", field, tid)
}
