package engine

import (
	"os"
	"syscall"
)

// faultAt names a step at which the engine kills itself with SIGKILL. Tests
// set HOTPATCH_FAULT to prove the target survives the engine dying there;
// SIGKILL leaves no chance for cleanup, exactly like an OOM kill.
var faultAt = os.Getenv("HOTPATCH_FAULT")

// Fault points, in the order an apply or revert passes them.
const (
	FaultAfterMap    = "after-map"    // patch memory mapped, nothing written
	FaultAfterWrite  = "after-write"  // patch written and protected, no jump yet
	FaultStopped     = "stopped"      // every thread stopped, before the check
	FaultMidSwitch   = "mid-switch"   // the first jump written, others not
	FaultAfterSwitch = "after-switch" // every jump written, threads still stopped
	FaultMidRevert   = "mid-revert"   // original bytes restored, memory not unmapped
)

func fault(point string) {
	if faultAt == point {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
