package engine

import "github.com/hotpatch/hotpatch/arch"

func hostArch() (*arch.Arch, error) { return arch.AMD64, nil }
