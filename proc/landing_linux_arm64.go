package proc

// Landing is not available on arm64 yet: injected calls are restored by
// the tracer only.
type Landing struct {
	SyscallRet uint64
	RestoreRT  uint64
}

// Byte sequences a Landing needs; none on arm64 yet.
var (
	LandingSyscallRet []byte
	LandingRestoreRT  []byte
)

func (p *Process) prepareLanding(t *Thread, call, saved *Regs) error { return nil }

func (r *Regs) restartable() bool { return false }

func (p *Process) hijackEntry(t *Thread, nr uint64, args []uint64, saved *Regs) error { return nil }
