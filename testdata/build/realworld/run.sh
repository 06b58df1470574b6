#!/usr/bin/env bash
# Real-world check, kept out of `make test` (it downloads Debian's zlib
# source): build zlib 1.2.13 with the CVE-2022-37434 fix reverted, run a
# proof of concept against it in a loop, build the fix with `hotpatch build`
# and apply it to the running process, which must stop crashing.
#
# Usage: testdata/build/realworld/run.sh [HOTPATCH]   (default bin/hotpatch)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
hotpatch=${1:-$root/bin/hotpatch}
work=$(mktemp -d)
poc_pid=
cleanup() {
	[ -n "$poc_pid" ] && kill "$poc_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

if ! "$hotpatch" build --help >/dev/null 2>&1; then
	echo "realworld: $hotpatch has no build command" >&2
	exit 1
fi

# Debian's source package, through apt with a private source list: the
# machine's apt configuration is not changed.
mkdir -p "$work/apt/lists/partial"
printf 'deb-src http://deb.debian.org/debian bookworm main\n' >"$work/apt/sources.list"
apt_opts=(-q -o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$work/apt/lists")
apt-get "${apt_opts[@]}" update >/dev/null
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only zlib=1:1.2.13.dfsg-1 >/dev/null 2>&1)
mkdir "$work/zlib"
tar -xjf "$work"/zlib_1.2.13.dfsg.orig.tar.bz2 -C "$work/zlib" --strip-components=1
python3 "$here/revert-fix.py" "$work/zlib/inflate.c"

# The user's build of the vulnerable library.
plain_start=$(date +%s.%N)
(cd "$work/zlib" && ./configure >/dev/null && make -j"$(nproc)" >/dev/null)
plain=$(awk -v a="$plain_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "plain build (configure + make -j$(nproc)): ${plain} s"
lib="$work/zlib/libz.so.1.2.13"
gcc -O2 -o "$work/poc" "$here/poc.c" -I"$work/zlib" -L"$work/zlib" -lz -Wl,-rpath,"$work/zlib"

"$work/poc" >"$work/poc.out" &
poc_pid=$!
sleep 1
if ! grep -q 'poc=crashed' "$work/poc.out"; then
	echo "realworld: the proof of concept does not crash the vulnerable zlib" >&2
	exit 1
fi
echo "before: $(tail -1 "$work/poc.out")"

start=$(date +%s.%N)
"$hotpatch" build --src "$work/zlib" --diff "$here/CVE-2022-37434.patch" --target "$lib" -o "$work/zlib.hp"
took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "hotpatch build: ${took} s, $(awk -v t="$took" -v p="$plain" 'BEGIN { printf "%.2f", t / p }') times the plain build"
"$hotpatch" apply --allow-unsigned --pid "$poc_pid" "$work/zlib.hp"
mark=$(wc -l <"$work/poc.out")
sleep 1
after=$(tail -n +"$((mark + 2))" "$work/poc.out")
echo "after: $(echo "$after" | tail -1)"
if echo "$after" | grep -q 'poc=crashed' || ! echo "$after" | grep -q 'poc=survived'; then
	echo "realworld: FAILED, the patched process still crashes" >&2
	exit 1
fi
echo "realworld: 1 passed, 0 failed"
