// Package arch holds what hotpatch knows about each CPU architecture as
// plain data and functions: relocation math, jump and stub encoders, the
// system call instruction and numbers, and reach limits. The files carry no
// build tags, so patch images can be built and checked on any host.
package arch
