package build

import "testing"

func TestCXXSibling(t *testing.T) {
	for cc, want := range map[string]string{
		"gcc":                       "g++",
		"cc":                        "c++",
		"clang":                     "clang++",
		"clang-15":                  "clang++-15",
		"gcc-12":                    "g++-12",
		"aarch64-linux-gnu-gcc":     "aarch64-linux-gnu-g++",
		"aarch64-linux-gnu-gcc-12":  "aarch64-linux-gnu-g++-12",
		"x86_64-linux-gnu-gcc-13.2": "x86_64-linux-gnu-g++-13.2",
		"icx":                       "",
	} {
		if got := cxxSibling(cc); got != want {
			t.Errorf("cxxSibling(%q) = %q, want %q", cc, got, want)
		}
	}
}
