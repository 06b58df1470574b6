// Package consistency decides whether a set of functions can be replaced
// now: with every thread of the target stopped, no thread may be executing
// inside one of them or be due to return into one.
//
// For each thread, Check tests the PC against the ranges of the functions
// and then unwinds the stack with the .eh_frame and .debug_frame call frame
// information of the loaded modules (parsed with delve's dwarf/frame). Every
// return address is tested too: the frame is busy if either the address or
// the address minus one lies in a range, since the caller sits inside the
// function holding the call and resumes executing the bytes at the return
// address. On architectures with a link register the top frame's LR is
// tested as well, because a leaf function returns through it.
//
// Unwinding is precise only while everything checks out: a CFI row exists,
// the CFA and the return address are computable (register rules and the
// DWARF expressions of signal trampolines and PLT stubs are evaluated),
// memory reads stay inside the thread's stack mapping, the stack pointer
// moves up, and the depth stays bounded. It ends properly only at a frame
// whose return address rule is undefined (_start, a thread's entry). At the
// first frame where any of this fails, the rest of the stack is scanned
// conservatively: every aligned word from that frame's SP to the top of the
// stack mapping is treated as a return address. A failure of the unwinder
// therefore never makes a thread look safe; if even the scan cannot read
// the stack, Check returns an error. A signal frame whose interrupted
// context lies on another stack (a handler running on an alternate signal
// stack) is followed onto that stack when Thread.StackOf names its
// mapping, and later reads and any scan use that stack; when it cannot be
// followed, Check returns an error, since scanning only the handler's stack
// would miss the interrupted frames.
//
// Check runs while the target is stopped, so it reads each stack in a few
// bulk reads, caches evaluated CFI rows per module, and looks ranges up by
// binary search. Modules are loaded beforehand with LoadModule, including
// the vDSO (NewModule on its image read from memory).
//
// Not covered: stacks that belong to no thread (coroutines, green
// threads), and signal trampolines without CFI (musl): their interrupted
// context is only found by the scan if it lies on the same stack.
package consistency
