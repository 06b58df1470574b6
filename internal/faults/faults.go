// Package faults lets tests kill the engine at a named step, to prove the
// target survives the engine dying there. HOTPATCH_FAULT names the step;
// the process then kills itself with SIGKILL, which leaves no chance for
// cleanup, exactly like an OOM kill.
package faults

import (
	"os"
	"syscall"
)

var at = os.Getenv("HOTPATCH_FAULT")

// Point kills the process if HOTPATCH_FAULT names this step.
func Point(name string) {
	if at == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
