GO ?= go
BIN := bin/hotpatch

.PHONY: all build test test-arm64 demo lint fuzz bench realworld realworld-server realworld-arm64 clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/hotpatch

# The whole suite: unit tests, fuzz seeds and the live-process integration
# tests (they need root or CAP_SYS_PTRACE, gcc and a Linux kernel).
test: lint
	$(GO) test -count=1 -timeout 20m ./...

# The engine's integration tests again on arm64, in a qemu VM (software
# emulation, about 3 minutes): fixtures are cross-compiled by a host run of
# the same tests, the test binary with GOARCH=arm64. See docs/arm64.md.
test-arm64:
	GO=$(GO) ./scripts/test-arm64.sh

demo: build
	./scripts/demo.sh

# A real CVE fix built from Debian's zlib source and patched into a running
# process whose proof of concept crashes before and not after.
realworld: build realworld-server
	./testdata/build/realworld/run.sh

# A server: Debian's redis with the CVE-2025-21605 fix reverted, patched live.
realworld-server: build
	./testdata/build/realworld-server/run.sh

# The zlib check on arm64: cross-built on this host (hotpatch build --cc
# aarch64-linux-gnu-gcc), applied in the emulated arm64 VM of test-arm64.
realworld-arm64: build
	GO=$(GO) ./testdata/build/realworld-arm64/run.sh

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint:
	$(GO) vet ./...
	GOARCH=arm64 $(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	GOFLAGS=-mod=mod $(GO) run $(STATICCHECK) ./...

# Each fuzz target for a while; the checked-in corpora run in `make test`.
fuzz:
	$(GO) test -run=^$$ -fuzz=^FuzzLoad$$ -fuzztime=60s ./patchfile/
	$(GO) test -run=^$$ -fuzz=^FuzzMetadata$$ -fuzztime=30s ./patchfile/
	$(GO) test -run=^$$ -fuzz=^FuzzVerify$$ -fuzztime=30s -fuzzminimizetime=200x ./trust/
	$(GO) test -run=^$$ -fuzz=^FuzzParsePublicKey$$ -fuzztime=30s ./trust/
	$(GO) test -run=^$$ -fuzz=^FuzzDecodeSignature$$ -fuzztime=30s -fuzzminimizetime=200x ./trust/

bench: build
	$(GO) test -run=^$$ -bench=. -benchtime=20x -timeout 30m ./engine/

clean:
	rm -rf bin
