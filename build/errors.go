package build

import (
	"debug/elf"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error Build returns wraps one of them.
var (
	// ErrRefused means the fix changes something a live process cannot take.
	ErrRefused = errors.New("change cannot be patched live")
	// ErrMismatch means the original build does not reproduce the target.
	ErrMismatch = errors.New("original build does not match the target")
	// ErrBuildFailed means the project's build command failed.
	ErrBuildFailed = errors.New("build failed")
	// ErrBadDiff means the fix does not parse or does not apply.
	ErrBadDiff = errors.New("fix does not apply")
	// ErrNoChanges means the fix changes no function of the target.
	ErrNoChanges = errors.New("no function of the target changes")
	// ErrUnsupported means the build uses something the builder cannot handle.
	ErrUnsupported = errors.New("not supported by the patch builder")
	// ErrWrongMachine means the compiler or an object is for another
	// architecture than the target.
	ErrWrongMachine = errors.New("wrong machine")
)

// Refusal is one reason a fix cannot be patched live.
type Refusal struct {
	Kind   string // short class, e.g. "data-size", "static-local-removed"
	Symbol string // the symbol concerned, NAME or NAME@FILE
	Reason string
	// Warning means Options.Force accepts it.
	Warning bool
}

func (r Refusal) String() string {
	s := fmt.Sprintf("%s: %s", r.Symbol, r.Reason)
	if r.Warning {
		s += " (--force accepts this)"
	}
	return s
}

// RefusalError lists every refusal found in a fix.
type RefusalError struct {
	Refusals []Refusal
}

func (e *RefusalError) Error() string {
	parts := make([]string, len(e.Refusals))
	for i, r := range e.Refusals {
		parts[i] = r.String()
	}
	return fmt.Sprintf("%v: %s", ErrRefused, strings.Join(parts, "; "))
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusalError) Is(target error) bool { return target == ErrRefused }

// MismatchError says where a function of the original build differs from
// the target.
type MismatchError struct {
	Function string
	File     string // source file of a local function
	Offset   uint64 // offset in the original build's function
	Detail   string
}

func (e *MismatchError) Error() string {
	name := e.Function
	if e.File != "" {
		name += "@" + e.File
	}
	return fmt.Sprintf("%v: function %s at +%#x: %s (was the target built from this source with this build command?)", ErrMismatch, name, e.Offset, e.Detail)
}

// Is makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// CommandError is a failed build command with the end of its output.
type CommandError struct {
	Stage   string // "original" or "patched"
	Command string
	Output  string
	Err     error
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%v: %s build (%s): %v\n%s", ErrBuildFailed, e.Stage, e.Command, e.Err, e.Output)
}

func (e *CommandError) Unwrap() []error { return []error{ErrBuildFailed, e.Err} }

// DiffError locates a problem in the fix.
type DiffError struct {
	File string
	Line int // line in the diff, 0 when not known
	Msg  string
}

func (e *DiffError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%v: %s (diff line %d): %s", ErrBadDiff, e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%v: %s: %s", ErrBadDiff, e.File, e.Msg)
}

// Is makes errors.Is(err, ErrBadDiff) true.
func (e *DiffError) Is(target error) bool { return target == ErrBadDiff }

// MachineError is a compiler or an object for another architecture than
// the target's.
type MachineError struct {
	What       string // "object PATH" or "compiler CC"
	Have, Want elf.Machine
}

func (e *MachineError) Error() string {
	return fmt.Sprintf("%v: %s is for %s but the target is %s; build with the compiler the target was built with (--cc/--cxx, or CC/CXX, e.g. --cc %s)",
		ErrWrongMachine, e.What, machineLabel(e.Have), machineLabel(e.Want), suggestedCC(e.Want))
}

// Is makes errors.Is(err, ErrWrongMachine) true.
func (e *MachineError) Is(target error) bool { return target == ErrWrongMachine }

func machineLabel(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86-64"
	case elf.EM_AARCH64:
		return "aarch64"
	}
	return m.String()
}

func suggestedCC(m elf.Machine) string {
	if m == elf.EM_AARCH64 {
		return "aarch64-linux-gnu-gcc"
	}
	return "x86_64-linux-gnu-gcc"
}
