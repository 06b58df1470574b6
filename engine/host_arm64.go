package engine

import "github.com/hotpatch/hotpatch/arch"

func hostArch() (*arch.Arch, error) { return arch.ARM64, nil }
