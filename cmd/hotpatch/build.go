package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/build"
)

func buildCmd() *cobra.Command {
	var opts build.Options
	var out string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "build --src DIR --diff FIX.patch --target PATH [--build CMD] [--cc CC] [--cxx CXX] [--jobs N] [--id ID] [--description TEXT] -o FILE.hp",
		Short: "Build a patch image from a source tree and a fix",
		Long: `Build copies DIR, builds it with CMD (default make) through a compiler
wrapper, applies FIX.patch (a unified diff, -p1), builds again and packs the
functions that changed into a patch image for PATH, the running binary that
DIR was built into. The original build must reproduce PATH's code, so
--cc/--cxx (default: $CC/$CXX, else gcc and g++) must name the compilers
PATH was built with, e.g. --cc aarch64-linux-gnu-gcc for an aarch64 target
built on another machine. With --cc and no --cxx, the C++ compiler is the
one that goes with it (aarch64-linux-gnu-gcc-12: aarch64-linux-gnu-g++-12),
not $CXX.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Src == "" || opts.Diff == "" || opts.Target == "" || out == "" {
				return errors.New("build needs --src, --diff, --target and -o")
			}
			if verbose {
				opts.Log = cmd.ErrOrStderr()
			}
			// The compilers the user's build would use, unless named. A
			// C++ compiler exported for the host does not go with a --cc
			// given here: without --cxx the builder takes --cc's sibling.
			ccFlag := opts.CC != ""
			if opts.CC == "" {
				opts.CC = os.Getenv("CC")
			}
			if opts.CXX == "" && !ccFlag {
				opts.CXX = os.Getenv("CXX")
			}
			res, err := build.Build(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, res.Image, 0o644); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s: patch %s for %s (build-id %s), %d function(s)\n", out, res.Meta.ID, opts.Target, res.Meta.TargetBuildID, len(res.Functions))
			for _, f := range res.Functions {
				fmt.Fprintf(w, "  replace %s (%s): %d -> %d bytes\n", f.Name, f.File, f.OldSize, f.NewSize)
			}
			list := func(label string, items []string) {
				if len(items) > 0 {
					fmt.Fprintf(w, "  %s: %s\n", label, strings.Join(items, ", "))
				}
			}
			list("new functions", res.Added)
			list("new data", res.NewData)
			list("changed constants (copied)", res.Constants)
			list("changed only in line numbers (left out)", res.LineOnly)
			list("not part of the target", res.Skipped)
			if verbose {
				list("bindings", res.Bindings)
			}
			for _, wr := range res.Warnings {
				fmt.Fprintf(w, "  accepted warning: %s\n", wr)
			}
			if len(res.Meta.CVEs) > 0 {
				fmt.Fprintf(w, "  fixes %s\n", strings.Join(res.Meta.CVEs, ", "))
			}
			fmt.Fprintf(w, "  original build %v, patched build %v", res.OriginalBuild.Round(time.Millisecond), res.PatchedBuild.Round(time.Millisecond))
			if res.AnalysisCompile > 0 {
				fmt.Fprintf(w, ", analysis compiles %v", res.AnalysisCompile.Round(time.Millisecond))
			}
			fmt.Fprintf(w, ", analysis %v\n", res.Analysis.Round(time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Src, "src", "", "source tree the target was built from (left untouched)")
	f.StringVar(&opts.Diff, "diff", "", "the fix: a unified diff, applied with -p1")
	f.StringVar(&opts.Target, "target", "", "the executable or shared library the patch is for")
	f.StringVar(&opts.BuildCmd, "build", "make", "shell command that builds the tree")
	f.StringVar(&opts.CC, "cc", "", "C compiler the target was built with, e.g. aarch64-linux-gnu-gcc (default: $CC, else gcc)")
	f.StringVar(&opts.CXX, "cxx", "", "C++ compiler the target was built with (default: with --cc, its g++ of the same version; else $CXX, else $CC's g++, else g++)")
	f.IntVar(&opts.Jobs, "jobs", 0, "parallel build jobs (default: number of CPUs)")
	f.StringVar(&opts.ID, "id", "", "patch id (default: the diff's name and hash)")
	f.StringVar(&opts.Description, "description", "", "description recorded in the patch")
	f.BoolVar(&opts.Force, "force", false, "accept changes that are only warnings (e.g. a static variable no longer used)")
	f.StringVar(&opts.WorkDir, "workdir", "", "scratch directory to build in (default: a temporary one)")
	f.BoolVar(&opts.KeepWork, "keep", false, "keep the temporary scratch directory")
	f.BoolVarP(&verbose, "verbose", "v", false, "show the build output and how references were bound")
	f.StringVarP(&out, "output", "o", "", "patch image to write")
	return cmd
}

// ccCmd is the compiler wrapper the builds run as CC and CXX: hotpatch cc
// (and hotpatch c++) run the compiler named by HOTPATCH_CC_REAL, or gcc
// (g++), with the flags the builder needs, and record each object.
func ccCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "cc [COMPILER ARGS...]",
		Aliases:            []string{"c++"},
		Short:              "Compiler wrapper used by hotpatch build",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "gcc"
			if cmd.CalledAs() == "c++" {
				name = "g++"
			}
			if code := build.WrapperMain(name, args, cmd.OutOrStdout(), cmd.ErrOrStderr()); code != 0 {
				os.Exit(code)
			}
			return nil
		},
	}
}
