#!/usr/bin/env bash
# test-arm64.sh - run hotpatch's engine integration tests on arm64, in a qemu
# VM (tools/arm64-lane), from an x86-64 host. See docs/arm64.md.
#
#   1. record: run the engine tests natively with HOTPATCH_FIXTURE_RECORD, so
#      every fixture they compile is also compiled by aarch64-linux-gnu-gcc;
#   2. cross-compile the engine test binary (GOARCH=arm64);
#   3. boot the VM and run that binary there with HOTPATCH_FIXTURE_PREBUILT.
#
# Environment: GO (go), ARM64_OUT (bin/arm64), ARM64_RUN (test regexp, all by
# default), ARM64_BENCH (benchmark regexp; "" for none), ARM64_BENCHTIME (10x),
# ARM64_TIMEOUT (VM seconds, 900), ARM64_ALLOWED_SKIPS (regexp of tests that
# may skip in the VM, with their reason printed), ARM64_ENV (VAR=value ... set for the tests in the VM). Exit status: 0 when every test passed in
# the VM, or when the VM cannot be started at all (reported as SKIPPED).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
OUT=${ARM64_OUT:-bin/arm64}
RUN=${ARM64_RUN:-.}
BENCH=${ARM64_BENCH-'^BenchmarkApply$/^threads=(1|4)$/^funcs=(1|10)$'}
BENCHTIME=${ARM64_BENCHTIME:-10x}
TIMEOUT=${ARM64_TIMEOUT:-900}
# Tests allowed to skip in the VM (a regexp of names); none by default:
# every engine test runs on arm64.
ALLOWED_SKIPS=${ARM64_ALLOWED_SKIPS:-}
CC=aarch64-linux-gnu-gcc

say() { echo "test-arm64: $*"; }
skip() { say "SKIPPED: $*"; exit 0; }

command -v "$CC" >/dev/null || { say "FAIL: $CC not found (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/fixtures"
fixtures=$(cd "$OUT/fixtures" && pwd)

say "recording arm64 fixtures (host run of the same tests)"
HOTPATCH_FIXTURE_CC=$CC HOTPATCH_FIXTURE_RECORD=$fixtures \
	"$GO" test -count=1 -timeout 10m -run "$RUN" ${BENCH:+-bench "$BENCH" -benchtime 1x} ./engine/ >"$OUT/record.log" 2>&1 ||
	{ tail -n 40 "$OUT/record.log"; say "FAIL: recording fixtures (host tests failed; log $OUT/record.log)"; exit 1; }
say "$(wc -l <"$fixtures/index.txt") fixtures, $(du -sh "$fixtures" | cut -f1)"

say "cross-compiling the engine tests"
GOARCH=arm64 CGO_ENABLED=0 "$GO" test -c -o "$OUT/engine.test" ./engine/

cmd="${ARM64_ENV:+$ARM64_ENV }HOTPATCH_FIXTURE_PREBUILT=/test/fixtures /test/engine.test -test.count=1 -test.v -test.timeout=$((TIMEOUT - 60))s -test.run '$RUN'"
[ -n "$BENCH" ] && cmd+=" -test.bench '$BENCH' -test.benchtime $BENCHTIME"
say "booting the VM: $cmd"
set +e
ARM64LANE_ALLOW_MISSING_LIBS=1 tools/arm64-lane/run-arm64.sh -q -t "$TIMEOUT" -o "$OUT/lane" -c "$cmd" \
	"$OUT/engine.test:/test/engine.test" "$fixtures:/test/fixtures"
rc=$?
set -e
log=$OUT/lane/console.log
[ $rc = 2 ] && skip "the arm64 lane could not be set up (qemu, kernel); see above"
[ -f "$log" ] && grep -q 'ARM64LANE-INIT' "$log" || skip "the arm64 VM did not boot (qemu exit $rc; log $log)"

# The guest's test output, without the lane's timestamps.
sed -n 's/^\[ *[0-9.]*\] //p' "$log" | tr -d '\r' >"$OUT/guest.log"
grep -E '^(--- |    [a-z_]+_test\.go:[0-9]+: applied|Benchmark|ok|PASS|FAIL)' "$OUT/guest.log" || true
pass=$(grep -c '^--- PASS' "$OUT/guest.log" || true)
fail=$(grep -c '^--- FAIL' "$OUT/guest.log" || true)
skipped=$(grep -c '^--- SKIP' "$OUT/guest.log" || true)
say "arm64 VM (emulated): $pass passed, $fail failed, $skipped skipped (log $OUT/guest.log)"
# A test skipped in the VM fails the run, except those known not to apply
# to arm64 (ARM64_ALLOWED_SKIPS, a regexp of test names); their reasons are
# printed.
unexpected=$(grep '^--- SKIP' "$OUT/guest.log" | grep -Ev "^--- SKIP: (${ALLOWED_SKIPS}) " || true)
grep -B1 '^--- SKIP' "$OUT/guest.log" | grep -v '^--$' || true
if [ -n "$unexpected" ]; then
	say "FAIL: tests skipped inside the VM: $unexpected"
	exit 1
fi
[ $rc = 0 ] && [ "$fail" = 0 ] && [ "$pass" -gt 0 ] || { say "FAIL (lane exit $rc)"; exit 1; }
say "PASS"
