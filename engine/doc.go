// Package engine applies, reverts and reports patches in running processes.
//
// Apply runs in two short stops. First one thread is stopped to map patch
// memory next to the target image with remote system calls; the patch is
// linked, written and protected while the other threads keep running. Then
// every thread is stopped for as long as it takes to check that none is
// inside a function being replaced and to write the jumps; when a thread is
// busy the process is resumed and the check retried until a timeout.
//
// The patch mapping starts with a state record, so everything about the
// patches in a process can be read back from the process alone.
package engine
