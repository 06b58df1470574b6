package trust

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SystemTrustDir is the host's trust directory when HOTPATCH_TRUST_DIR is
// not set.
const SystemTrustDir = "/etc/hotpatch/trusted.d"

// TrustDirEnv names the environment variable that overrides
// SystemTrustDir.
const TrustDirEnv = "HOTPATCH_TRUST_DIR"

// DefaultTrustDir returns $HOTPATCH_TRUST_DIR when it is set and not
// empty, and SystemTrustDir otherwise.
func DefaultTrustDir() string {
	if d := os.Getenv(TrustDirEnv); d != "" {
		return d
	}
	return SystemTrustDir
}

// LoadTrustDir returns the public keys of every *.pub file in dir, in
// name order. Names starting with "." are skipped, as a shell glob would.
// A missing dir yields no keys and no error. Any other problem fails the
// whole load rather than silently trusting fewer keys: an unreadable
// directory, a .pub entry that is not a valid public key file, or a
// directory or key file that anyone may write (ErrKeyPermissions).
func LoadTrustDir(dir string) ([]PublicKey, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("trust directory %s: not a directory", dir)
	}
	if perm := st.Mode().Perm(); perm&0o002 != 0 {
		return nil, fmt.Errorf("trust directory %s: %w: mode %04o lets anyone add keys; run chmod o-w %s", dir, ErrKeyPermissions, perm, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("trust directory: %w", err)
	}
	var keys []PublicKey
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, PublicKeySuffix) {
			continue
		}
		k, err := LoadPublicKey(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// TrustDirExists reports whether dir exists, for messages that explain
// why no key matched.
func TrustDirExists(dir string) bool {
	_, err := os.Stat(dir)
	return err == nil
}
