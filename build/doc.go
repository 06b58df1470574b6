// Package build turns a source fix into a patch image for one exact binary.
//
// Build copies the source tree the running binary was made from into a
// scratch directory, builds it with its own build command while a compiler
// wrapper (WrapperMain) adds -ffunction-sections -fdata-sections to every
// compile and keeps a copy of each object, applies the fix (a unified
// diff), builds again, and then compares the two sets of objects function
// by function: code bytes and relocations, with every relocation compared
// by the symbol it refers to rather than by raw bytes.
//
// The changed functions, the new functions they call, the functions a
// changed static function was inlined into, new data and the constants
// the included code uses go into a new ELF relocatable object. References
// to everything else, including static variables and static functions of
// the running binary, become undefined symbols that the engine binds to the
// running image. Before anything is written, each replaced function of the
// original build is matched against the target's bytes instruction by
// instruction, modulo relocated fields and the branch relaxation the
// assembler does differently with function sections (run-pre matching), so
// a patch is only made when the source really is the source of the target.
//
// Changes that cannot be applied to a live process are refused with a
// *RefusalError naming the symbol and the reason: changed size or
// initializer of existing data, changed layouts of structures that existing
// data or replaced functions use, changed constructors, new thread-local
// variables, and on aarch64 patches that would break what gcc's
// interprocedural register allocation assumed between the target's code
// and the patch's (regs.go). Some are warnings that Options.Force accepts.
//
// Targets may be x86-64 or aarch64 (Options.CC names the compiler, a
// cross compiler included); what differs between the two, relocation
// classes, compiler flags, run-pre rules and PLT layout, is in one table
// per machine (machine.go). On aarch64 the objects compared are a second,
// anchor-free compile of each source, which runs after the fixed build and
// only for the objects that build compiled again (analysiscc.go).
//
// The result is packed with patchfile.Pack, carrying the target's
// build-id, the hash of every replaced function and, in Metadata.Builder,
// the fix's name and hash, the old and new sizes of each function and its
// source file.
package build
