// Package target finds what a patch is for inside a running process: the
// mapped ELF image with a given build-id (the main executable or any shared
// library), its load bias, its symbols including static functions and data,
// and the other loaded objects in link-map order for resolving imports.
//
// Everything here reads /proc and files; nothing stops or writes the process.
package target
