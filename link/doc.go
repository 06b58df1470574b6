// Package link lays out a patch image's sections in patch memory, resolves
// its symbols and applies its relocations, like a small static linker whose
// output is loaded next to a running image instead of into a file.
//
// Planning (Plan) resolves every symbol and checks every relocation before
// the target is touched; linking (Plan.Link) is then pure arithmetic for a
// chosen base address. Architecture knowledge comes from package arch.
package link
