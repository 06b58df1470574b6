package engine

import (
	"github.com/hotpatch/hotpatch/internal/faults"
	"github.com/hotpatch/hotpatch/proc"
)

// Fault points, in the order an apply or revert passes them.
const (
	FaultAfterMap    = "after-map"    // patch memory mapped, nothing written
	FaultAfterWrite  = "after-write"  // patch written and protected, no jump yet
	FaultStopped     = "stopped"      // every thread stopped, before the check
	FaultMidSwitch   = "mid-switch"   // the first jump written, others not
	FaultAfterSwitch = "after-switch" // every jump written, threads still stopped
	FaultMidRevert   = "mid-revert"   // original bytes restored, memory not unmapped
	// FaultMidCall is inside a remote call (unwind-table registration):
	// the thread runs the callee with the engine gone.
	FaultMidCall = proc.FaultMidCall
)

func fault(point string) { faults.Point(point) }
