package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/patchfile"
	"github.com/hotpatch/hotpatch/target"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	root := newRoot(os.Stdout, os.Stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hotpatch: "+oneLine(err.Error()))
		os.Exit(1)
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "hotpatch",
		Short:         "Patch running programs and shared libraries without a restart",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	root.AddCommand(packCmd(), applyCmd(log), revertCmd(), statusCmd(), inspectCmd())
	return root
}

func packCmd() *cobra.Command {
	var targetPath, id, out string
	var replaces []string
	cmd := &cobra.Command{
		Use:   "pack --target PATH --replace OLD=NEW [--replace ...] [--id ID] -o FILE.hp OBJECT.o",
		Short: "Turn a compiled object into a patch image for one exact binary",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if targetPath == "" || out == "" || len(replaces) == 0 {
				return errors.New("pack needs --target, at least one --replace OLD=NEW and -o")
			}
			obj, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if id == "" {
				sum := sha256.Sum256(obj)
				id = strings.TrimSuffix(filepath.Base(args[0]), filepath.Ext(args[0])) + "-" + hex.EncodeToString(sum[:4])
			}
			meta, err := target.PatchMetadata(targetPath, id, replaces)
			if err != nil {
				return err
			}
			img, err := patchfile.Pack(obj, meta)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, img, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: patch %s for %s (build-id %s), %d function(s)\n", out, id, targetPath, meta.TargetBuildID, len(meta.Functions))
			return nil
		},
	}
	cmd.Flags().StringVar(&targetPath, "target", "", "executable or shared library the patch is for")
	cmd.Flags().StringArrayVar(&replaces, "replace", nil, "OLD=NEW: redirect target function OLD to patch function NEW")
	cmd.Flags().StringVar(&id, "id", "", "patch id (default: object name and hash)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "patch image to write")
	return cmd
}

func applyCmd(log *slog.Logger) *cobra.Command {
	var pid int
	var timeout time.Duration
	var allowUnsigned, all bool
	cmd := &cobra.Command{
		Use:   "apply (--pid PID | --all) [--timeout 10s] [--allow-unsigned] FILE.hp",
		Short: "Apply a patch image to a running process, or to every process mapping its target",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (pid == 0) == !all {
				return errors.New("apply needs exactly one of --pid PID or --all")
			}
			spec, err := patchfile.LoadFile(args[0])
			if err != nil {
				return err
			}
			// Signature verification is not implemented yet, so every image
			// counts as unsigned and needs the explicit escape.
			if !allowUnsigned {
				return fmt.Errorf("%s: %w; pass --allow-unsigned to apply it anyway (development only)", args[0], engine.ErrUnsigned)
			}
			log.Warn("applying an unsigned patch", "patch", spec.Meta.ID, "file", args[0])
			pids := []int{pid}
			if all {
				if pids, err = target.ProcessesMapping(spec.Meta.TargetBuildID); err != nil {
					return err
				}
				if len(pids) == 0 {
					return fmt.Errorf("no running process maps %s (build-id %s)", spec.Meta.TargetPath, spec.Meta.TargetBuildID)
				}
			}
			var failed error
			for _, p := range pids {
				res, err := engine.Apply(cmd.Context(), p, spec, engine.Options{Timeout: timeout})
				if err != nil {
					failed = errors.Join(failed, fmt.Errorf("pid %d: %w", p, err))
					continue
				}
				w := cmd.OutOrStdout()
				if res.AlreadyApplied {
					fmt.Fprintf(w, "pid %d: patch %s is already applied; nothing to do\n", p, res.ID)
					continue
				}
				fmt.Fprintf(w, "pid %d: applied %s: %d function(s), %d thread(s) paused %v, %d attempt(s), total %v\n",
					p, res.ID, len(res.Functions), res.Threads, res.Pause.Round(time.Microsecond), res.Attempts, res.Total.Round(time.Microsecond))
				for _, f := range res.Functions {
					fmt.Fprintf(w, "  %s %#x -> %#x (%d-byte jump)\n", f.Name, f.Old, f.New, f.JumpLen)
				}
				for _, im := range res.Imports {
					fmt.Fprintf(w, "  import %s from %s\n", im.Name, im.Origin)
				}
			}
			return failed
		},
	}
	cmd.Flags().IntVar(&pid, "pid", 0, "process to patch")
	cmd.Flags().BoolVar(&all, "all", false, "patch every process that maps the target image")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for no thread to be inside a replaced function")
	cmd.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "apply a patch without a trusted signature (development only)")
	return cmd
}

func revertCmd() *cobra.Command {
	var pid int
	var all bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "revert --pid PID (ID | --all)",
		Short: "Revert a patch (last in, first out), or all of them",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pid == 0 {
				return errors.New("revert needs --pid PID")
			}
			if all == (len(args) == 1) {
				return errors.New("revert needs a patch id or --all")
			}
			opts := engine.Options{Timeout: timeout}
			var results []*engine.RevertResult
			var err error
			if all {
				results, err = engine.RevertAll(cmd.Context(), pid, opts)
			} else {
				var r *engine.RevertResult
				if r, err = engine.Revert(cmd.Context(), pid, args[0], opts); r != nil {
					results = append(results, r)
				}
			}
			for _, r := range results {
				fmt.Fprintf(cmd.OutOrStdout(), "pid %d: reverted %s, paused %v\n", pid, r.ID, r.Pause.Round(time.Microsecond))
			}
			if all && err == nil && len(results) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "pid %d: no patches applied\n", pid)
			}
			return err
		},
	}
	cmd.Flags().IntVar(&pid, "pid", 0, "process to revert")
	cmd.Flags().BoolVar(&all, "all", false, "revert every patch, newest first")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for no thread to be inside patch code")
	return cmd
}

func statusCmd() *cobra.Command {
	var pid int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status --pid PID [--json]",
		Short: "Show the patches in a running process, read from the process itself",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pid == 0 {
				return errors.New("status needs --pid PID")
			}
			st, err := engine.Status(pid)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			if len(st) == 0 {
				fmt.Fprintf(w, "pid %d: no patches\n", pid)
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tID\tSTATE\tBASE\tAPPLIED\tFUNCTIONS")
			for _, p := range st {
				var names []string
				for _, f := range p.Functions {
					names = append(names, f.Name)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%#x\t%s\t%s\n", p.Sequence, p.ID, p.State, p.Base, p.Applied.Format(time.RFC3339), strings.Join(names, ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&pid, "pid", 0, "process to inspect")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func inspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE.hp [--json]",
		Short: "Print what a patch image contains",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := patchfile.LoadFile(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				b, err := spec.JSON()
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return err
			}
			return spec.Describe(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
