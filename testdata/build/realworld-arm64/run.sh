#!/usr/bin/env bash
# The real-world check of testdata/build/realworld on arm64: built on this
# x86-64 host with the cross compiler, applied in the emulated arm64 VM
# (tools/arm64-lane). Debian's zlib 1.2.13 source with the CVE-2022-37434
# fix reverted is cross-built for aarch64, the proof of concept is
# cross-compiled against it, the fix is built into a patch image by the
# host's `hotpatch build --cc aarch64-linux-gnu-gcc` and signed with a fresh
# key. In the VM (guest.sh) the proof of concept runs in a loop and
# crashes, the arm64 hotpatch applies the image to the running process,
# which then survives, and a revert makes it crash again.
#
# Usage: testdata/build/realworld-arm64/run.sh [HOTPATCH]   (default bin/hotpatch)
# Environment: GO (go), RW_ARM64_OUT (bin/realworld-arm64: the arm64 CLI,
# the patch image and the VM's console log are kept there),
# RW_ARM64_TIMEOUT (VM seconds, 240).
# Exit status: 0 when the check passed in the VM, or when the VM cannot be
# set up at all (reported as SKIPPED, as scripts/test-arm64.sh does).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
rw=$root/testdata/build/realworld
hotpatch=${1:-$root/bin/hotpatch}
GO=${GO:-go}
CC=aarch64-linux-gnu-gcc
out=${RW_ARM64_OUT:-$root/bin/realworld-arm64}
timeout=${RW_ARM64_TIMEOUT:-240}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { echo "realworld-arm64: $*"; }
fail() {
	say "FAIL: $*"
	say "0 passed, 1 failed"
	exit 1
}
# timed FILE CMD...: runs CMD, writes "WALL CPU" (seconds; CPU is user +
# system time of CMD and its children) to FILE.
timed() {
	local f=$1 TIMEFORMAT='%R %U %S' t
	shift
	{ t=$( { time "$@" >&3 2>&4; } 2>&1); } 3>&1 4>&2 || return
	echo "$t" | awk '{ printf "%.1f %.1f\n", $1, $2 + $3 }' >"$f"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

command -v "$CC" >/dev/null || fail "$CC not found (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
"$hotpatch" build --help >/dev/null 2>&1 || fail "$hotpatch has no build command"
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Debian's source package, through apt with a private source list (the
# recipe of realworld/run.sh): the machine's apt configuration is not changed.
mkdir -p "$work/apt/lists/partial"
printf 'deb-src http://deb.debian.org/debian bookworm main\n' >"$work/apt/sources.list"
apt_opts=(-q -o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$work/apt/lists")
apt-get "${apt_opts[@]}" update >/dev/null || fail "apt-get update (deb-src bookworm)"
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only zlib=1:1.2.13.dfsg-1 >/dev/null 2>&1) || fail "downloading the zlib source package"
mkdir "$work/zlib"
tar -xjf "$work"/zlib_1.2.13.dfsg.orig.tar.bz2 -C "$work/zlib" --strip-components=1 || fail "unpacking the zlib source"
python3 "$rw/revert-fix.py" "$work/zlib/inflate.c" || fail "reverting the fix"

# The user's cross build of the vulnerable library: zlib's configure takes
# the toolchain from CHOST (aarch64-linux-gnu-gcc, -ar, -ranlib) and writes
# it into the Makefile, which the wrapper of `hotpatch build` then stands in for.
(cd "$work/zlib" && timed "$work/plain.time" sh -c "CHOST=aarch64-linux-gnu ./configure >/dev/null && make -j$(nproc) >/dev/null") ||
	fail "cross-building zlib"
read -r plain plain_cpu <"$work/plain.time"
say "plain cross build (configure + make -j$(nproc)): ${plain} s (CPU ${plain_cpu} s)"
lib=$work/zlib/libz.so.1.2.13
aarch64-linux-gnu-readelf -h "$lib" | grep -q 'Machine:.*AArch64' || fail "$lib is not an aarch64 library"
# The VM finds this libz through the rpath, nowhere else: /test/zlib.
"$CC" -O2 -o "$work/poc" "$rw/poc.c" -I"$work/zlib" -L"$work/zlib" -lz -Wl,-rpath,/test/zlib || fail "cross-compiling the proof of concept"

timed "$work/build.time" "$hotpatch" build --cc "$CC" --src "$work/zlib" --diff "$rw/CVE-2022-37434.patch" \
	--target "$lib" -o "$out/zlib-arm64.hp" || fail "hotpatch build --cc $CC"
read -r took took_cpu <"$work/build.time"
say "hotpatch build: ${took} s (CPU ${took_cpu} s), $(ratio "$took" "$plain") times the plain cross build ($(ratio "$took_cpu" "$plain_cpu") in CPU)"
"$hotpatch" inspect "$out/zlib-arm64.hp" >"$work/inspect.txt" || fail "hotpatch inspect"
grep -q '^arch: *arm64 (EM_AARCH64)$' "$work/inspect.txt" || fail "the patch image is not for EM_AARCH64: $(grep '^arch:' "$work/inspect.txt")"
id=$(sed -n 's/^id: *//p' "$work/inspect.txt")
say "patch image $id: arm64 (EM_AARCH64), replaces $(sed -n '/^functions/,/^$/s/^  \([^ ]*\) .*/\1/p' "$work/inspect.txt" | paste -sd, -)"
# Signed with a fresh key, which the VM is told to trust.
"$hotpatch" key generate -o "$work/realworld" >/dev/null || fail "hotpatch key generate"
"$hotpatch" sign --key "$work/realworld.key" "$out/zlib-arm64.hp" >/dev/null || fail "hotpatch sign"
"$hotpatch" verify --trust "$work/realworld.pub" "$out/zlib-arm64.hp" >/dev/null || fail "hotpatch verify"

(cd "$root" && GOARCH=arm64 CGO_ENABLED=0 "$GO" build -o "$out/hotpatch-arm64" ./cmd/hotpatch) || fail "cross-compiling the hotpatch CLI"

say "booting the arm64 VM (emulated)"
set +e
ARM64LANE_ALLOW_MISSING_LIBS=1 "$root/tools/arm64-lane/run-arm64.sh" -q -t "$timeout" -o "$out/lane" \
	-c "sh /test/guest.sh '$id'" -m 'realworld-arm64: PASS' \
	"$here/guest.sh:/test/guest.sh" "$work/poc:/test/poc" "$out/hotpatch-arm64:/bin/hotpatch" \
	"$out/zlib-arm64.hp:/test/zlib-arm64.hp" "$work/realworld.pub:/test/realworld.pub" \
	"$lib:/test/zlib/libz.so.1.2.13" "$work/zlib/libz.so.1:/test/zlib/libz.so.1"
rc=$?
set -e
log=$out/lane/console.log
if [ $rc = 2 ]; then
	say "SKIPPED: the arm64 lane could not be set up (qemu, kernel); see above"
	exit 0
fi
if [ ! -f "$log" ] || ! grep -q 'ARM64LANE-INIT' "$log"; then
	say "SKIPPED: the arm64 VM did not boot (qemu exit $rc; log $log)"
	exit 0
fi

# The guest's output, without the lane's timestamps.
sed -n 's/^\[ *[0-9.]*\] //p' "$log" | tr -d '\r' >"$out/guest.log"
sed -n '/^realworld-arm64: /,$p' "$out/guest.log" | grep -v '^ARM64LANE-\|reboot: Power down' || true
if [ $rc = 0 ] && grep -q '^realworld-arm64: PASS' "$out/guest.log" && ! grep -q '^realworld-arm64: FAIL' "$out/guest.log"; then
	say "1 passed, 0 failed (apply in the emulated arm64 VM; log $out/guest.log)"
	exit 0
fi
grep -q '^realworld-arm64: FAIL' "$out/guest.log" || say "FAIL: the VM did not finish the check (lane exit $rc; log $out/guest.log)"
say "0 passed, 1 failed"
exit 1
