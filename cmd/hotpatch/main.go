package main

import (
	"bytes"
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
	"github.com/hotpatch/hotpatch/trust"
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
	root.AddCommand(buildCmd(), ccCmd(), packCmd(), applyCmd(log), revertCmd(), statusCmd(), inspectCmd(),
		keyCmd(), signCmd(), verifyCmd())
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
	var consistencyMode string
	var allowUnsigned, all bool
	var trustFiles []string
	cmd := &cobra.Command{
		Use:   "apply (--pid PID | --all) [--timeout 10s] [--trust KEY.pub ...] [--allow-unsigned] FILE.hp",
		Short: "Apply a patch image to a running process, or to every process mapping its target",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (pid == 0) == !all {
				return errors.New("apply needs exactly one of --pid PID or --all")
			}
			// Load fully validates the image; the signature is checked next,
			// before anything looks at, let alone stops, a process.
			spec, err := patchfile.LoadFile(args[0])
			if err != nil {
				return err
			}
			if spec.Signature == nil && allowUnsigned {
				log.Warn("applying an unsigned patch because of --allow-unsigned", "patch", spec.Meta.ID, "file", args[0])
			} else {
				key, err := verifyPatch(spec, args[0], trustFiles)
				if err != nil {
					if allowUnsigned {
						return fmt.Errorf("%w; --allow-unsigned admits only unsigned patches, never a signed one that fails verification", err)
					}
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: signature valid, trusted key %s\n", args[0], keyLabel(key))
			}
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
				res, err := engine.Apply(cmd.Context(), p, spec, engine.Options{Timeout: timeout, Consistency: engine.Consistency(consistencyMode)})
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
					how := "gated"
					if !f.Gated {
						how = "direct: " + f.Ungated
					}
					fmt.Fprintf(w, "  %s %#x -> %#x (%d-byte jump, %s)\n", f.Name, f.Old, f.New, f.JumpLen, how)
				}
				if res.UnwindRegistered {
					fmt.Fprintln(w, "  unwind tables registered with the target's unwinder")
				}
				if res.Fallbacks > 0 {
					fmt.Fprintf(w, "  %d thread(s) checked by a conservative stack scan (no unwind information)\n", res.Fallbacks)
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
	cmd.Flags().StringVar(&consistencyMode, "consistency", "strict", "strict: no thread inside or returning into a replaced function; entry: only none inside the overwritten entry bytes (for functions that never return)")
	cmd.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "apply an unsigned patch (development only; signed patches must still verify)")
	trustFlag(cmd, &trustFiles)
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
	var trustFiles []string
	cmd := &cobra.Command{
		Use:   "inspect FILE.hp [--json] [--trust KEY.pub ...]",
		Short: "Print what a patch image contains and whether its signature verifies",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := patchfile.LoadFile(args[0])
			if err != nil {
				return err
			}
			check := checkSignature(spec, trustFiles)
			if asJSON {
				b, err := spec.JSON()
				if err != nil {
					return err
				}
				if b, err = addVerification(b, check); err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return err
			}
			var buf bytes.Buffer
			if err := spec.Describe(&buf); err != nil {
				return err
			}
			_, err = io.WriteString(cmd.OutOrStdout(), replaceSignatureLine(buf.String(), check.text()))
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	trustFlag(cmd, &trustFiles)
	return cmd
}

// trustFlag adds the repeatable --trust flag.
func trustFlag(cmd *cobra.Command, files *[]string) {
	cmd.Flags().StringArrayVar(files, "trust", nil,
		"also trust the public key in this file (repeatable); keys in $"+trust.TrustDirEnv+" or "+trust.SystemTrustDir+" are always trusted")
}

// loadTrust returns the host's trusted keys: those in the trust directory
// and those named with --trust. It also returns the directory searched.
func loadTrust(files []string) ([]trust.PublicKey, string, error) {
	dir := trust.DefaultTrustDir()
	keys, err := trust.LoadTrustDir(dir)
	if err != nil {
		return nil, dir, err
	}
	for _, f := range files {
		k, err := trust.LoadPublicKey(f)
		if err != nil {
			return nil, dir, fmt.Errorf("--trust: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, dir, nil
}

// verifyPatch checks spec's signature against the host's trusted keys and
// returns the signer's key. Errors name the file, the reason and the key
// fingerprint, and for an untrusted key say where keys are looked for.
func verifyPatch(spec *patchfile.Spec, file string, trustFiles []string) (trust.PublicKey, error) {
	if spec.Signature == nil {
		_, err := trust.Verify(spec, nil)
		return trust.PublicKey{}, fmt.Errorf("%s: %w; sign it with 'hotpatch sign --key NAME.key %s', or pass --allow-unsigned to apply it anyway (development only)", file, err, file)
	}
	keys, dir, err := loadTrust(trustFiles)
	if err != nil {
		return trust.PublicKey{}, fmt.Errorf("%s: cannot load trusted keys: %w", file, err)
	}
	fp, err := trust.Verify(spec, keys)
	switch {
	case errors.Is(err, trust.ErrUntrustedKey):
		return trust.PublicKey{}, fmt.Errorf("%s: %w; %s", file, err, trustHint(dir, len(trustFiles)))
	case err != nil:
		return trust.PublicKey{}, fmt.Errorf("%s: %w", file, err)
	}
	key, _ := trust.FindKey(keys, fp)
	return key, nil
}

// trustHint says where trusted keys were looked for and how to add one.
func trustHint(dir string, extra int) string {
	where := "no trusted key has this fingerprint: searched " + dir
	if !trust.TrustDirExists(dir) {
		where += " (does not exist)"
	}
	if extra > 0 {
		where += fmt.Sprintf(" and %d --trust file(s)", extra)
	}
	return fmt.Sprintf("%s; to trust the signer, copy its .pub file into %s (install -D -m 0644 NAME.pub %s/NAME.pub) or pass --trust NAME.pub", where, dir, dir)
}

// keyLabel names a trusted key by fingerprint and, when known, its file.
func keyLabel(k trust.PublicKey) string {
	if k.Source == "" {
		return k.Fingerprint()
	}
	return k.Fingerprint() + " (" + k.Source + ")"
}

// signatureCheck is what inspect reports about a signature.
type signatureCheck struct {
	State       string `json:"state"` // unsigned, valid, untrusted, invalid or unknown
	Fingerprint string `json:"fingerprint,omitempty"`
	KeyFile     string `json:"key_file,omitempty"`
	Detail      string `json:"detail,omitempty"`
}

// checkSignature verifies spec for inspect, which reports the outcome
// instead of failing.
func checkSignature(spec *patchfile.Spec, trustFiles []string) signatureCheck {
	if spec.Signature == nil {
		return signatureCheck{State: "unsigned"}
	}
	fp := trust.KeyIDFingerprint(spec.Signature.KeyID)
	keys, dir, err := loadTrust(trustFiles)
	if err != nil {
		return signatureCheck{State: "unknown", Fingerprint: fp, Detail: "cannot load trusted keys: " + err.Error()}
	}
	got, err := trust.Verify(spec, keys)
	var ve *trust.VerifyError
	errors.As(err, &ve)
	switch {
	case err == nil:
		k, _ := trust.FindKey(keys, got)
		return signatureCheck{State: "valid", Fingerprint: got, KeyFile: k.Source}
	case errors.Is(err, trust.ErrUntrustedKey):
		return signatureCheck{State: "untrusted", Fingerprint: fp, Detail: trustHint(dir, len(trustFiles))}
	case ve != nil:
		return signatureCheck{State: "invalid", Fingerprint: fp, Detail: ve.Reason}
	default:
		return signatureCheck{State: "invalid", Fingerprint: fp, Detail: err.Error()}
	}
}

func (c signatureCheck) text() string {
	switch c.State {
	case "unsigned":
		return "unsigned (apply refuses it without --allow-unsigned)"
	case "valid":
		s := "valid, trusted key " + c.Fingerprint
		if c.KeyFile != "" {
			s += " (" + c.KeyFile + ")"
		}
		return s
	case "untrusted":
		return "signed by untrusted key " + c.Fingerprint
	case "invalid":
		return "does not verify, key " + c.Fingerprint + ": " + c.Detail
	default:
		return "present, key " + c.Fingerprint + ", not checked: " + c.Detail
	}
}

// replaceSignatureLine puts the verification result in place of the value
// of the "signature:" line of Spec.Describe's output, keeping its
// alignment. Without such a line the result is appended.
func replaceSignatureLine(desc, state string) string {
	lines := strings.SplitAfter(desc, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "signature:") {
			continue
		}
		n := len("signature:")
		for n < len(l) && l[n] == ' ' {
			n++
		}
		lines[i] = l[:n] + oneLine(state) + "\n"
		return strings.Join(lines, "")
	}
	if desc != "" && !strings.HasSuffix(desc, "\n") {
		desc += "\n"
	}
	return desc + "signature: " + oneLine(state) + "\n"
}

// addVerification adds a "verification" member at the end of the JSON
// object printed by Spec.JSON, leaving the existing members as they are.
func addVerification(b []byte, c signatureCheck) ([]byte, error) {
	v, err := json.MarshalIndent(c, "  ", "  ")
	if err != nil {
		return nil, err
	}
	body, ok := bytes.CutSuffix(bytes.TrimRight(b, "\n"), []byte("\n}"))
	if !ok {
		return nil, errors.New("inspect: unexpected JSON layout")
	}
	out := append(bytes.Clone(body), ",\n  \"verification\": "...)
	out = append(out, v...)
	return append(out, "\n}"...), nil
}

func keyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Create and examine signing keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("key needs a subcommand: generate or fingerprint")
		},
	}
	var out, comment string
	gen := &cobra.Command{
		Use:   "generate -o NAME [--comment TEXT]",
		Short: "Create an ed25519 signing key pair: NAME.key (private, mode 0600) and NAME.pub",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("key generate needs -o NAME (writes NAME.key and NAME.pub)")
			}
			if !cmd.Flags().Changed("comment") {
				comment = filepath.Base(out)
			}
			k, err := trust.GenerateKey(nil, comment)
			if err != nil {
				return err
			}
			keyPath, pubPath, err := trust.WriteKeyFiles(out, k)
			if err != nil {
				return err
			}
			dir := trust.DefaultTrustDir()
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s (private key, mode 0600: keep it secret) and %s\n", keyPath, pubPath)
			fmt.Fprintf(w, "fingerprint: %s\n", k.Public().Fingerprint())
			fmt.Fprintf(w, "to trust it on a host: install -D -m 0644 %s %s\n", pubPath, filepath.Join(dir, filepath.Base(pubPath)))
			return nil
		},
	}
	gen.Flags().StringVarP(&out, "output", "o", "", "write NAME.key and NAME.pub")
	gen.Flags().StringVar(&comment, "comment", "", "comment stored in the key files (default: base name of NAME)")
	fpr := &cobra.Command{
		Use:   "fingerprint KEYFILE",
		Short: "Print the fingerprint of a public (.pub) or private (.key) key file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := trust.LoadPublicKey(args[0])
			if errors.Is(err, trust.ErrInvalidKey) {
				if priv, perr := trust.LoadPrivateKey(args[0]); perr == nil {
					pub, err = priv.Public(), nil
				} else if !errors.Is(perr, trust.ErrInvalidKey) {
					err = perr
				}
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", pub.Fingerprint(), args[0])
			return err
		},
	}
	cmd.AddCommand(gen, fpr)
	return cmd
}

func signCmd() *cobra.Command {
	var keyPath string
	cmd := &cobra.Command{
		Use:   "sign --key NAME.key FILE.hp...",
		Short: "Sign patch images in place, replacing any earlier signature",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" {
				return errors.New("sign needs --key NAME.key (create one with 'hotpatch key generate -o NAME')")
			}
			k, err := trust.LoadPrivateKey(keyPath)
			if err != nil {
				return err
			}
			for _, file := range args {
				if err := signFile(cmd.OutOrStdout(), file, k); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "private key file (mode 0600) from 'hotpatch key generate'")
	return cmd
}

// signFile signs the patch image at path in place: only the bytes of its
// signature slot are written.
func signFile(w io.Writer, path string, k trust.PrivateKey) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	raw, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	old, err := patchfile.Load(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	signed, err := trust.Sign(raw, k)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	slot := old.SignatureSlot
	if _, err := f.WriteAt(signed[slot.Off:slot.Off+slot.Len], int64(slot.Off)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fp := k.Public().Fingerprint()
	msg := fmt.Sprintf("signed %s (patch %s) with key %s", path, old.Meta.ID, fp)
	if old.Signature != nil {
		if prev := trust.KeyIDFingerprint(old.Signature.KeyID); prev != fp {
			msg += ", replacing a signature by " + prev
		} else {
			msg += ", replacing the earlier signature by the same key"
		}
	}
	_, err = fmt.Fprintln(w, msg)
	return err
}

func verifyCmd() *cobra.Command {
	var trustFiles []string
	cmd := &cobra.Command{
		Use:   "verify [--trust KEY.pub ...] FILE.hp",
		Short: "Check that a patch image is intact and signed by a trusted key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := patchfile.LoadFile(args[0])
			if err != nil {
				return err
			}
			if spec.Signature == nil {
				_, err := trust.Verify(spec, nil)
				return fmt.Errorf("%s: %w; sign it with 'hotpatch sign --key NAME.key %s'", args[0], err, args[0])
			}
			key, err := verifyPatch(spec, args[0], trustFiles)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: signature valid, trusted key %s; patch %s for build-id %s\n",
				args[0], keyLabel(key), spec.Meta.ID, spec.Meta.TargetBuildID)
			return err
		},
	}
	trustFlag(cmd, &trustFiles)
	return cmd
}
