package proc

import "errors"

// syscallInsnSize is the length of `svc #0`.
const syscallInsnSize = 4

// errNoCallStub: remote calls need an arm64 call stub, not written yet.
var errNoCallStub = errors.New("remote calls are not supported on arm64 yet")

func (r *Regs) setCall(entry, sp uint64, args []uint64) error { return errNoCallStub }

// ResumeContext is not available on arm64 yet.
func (r *Regs) ResumeContext() []uint64 { return nil }
