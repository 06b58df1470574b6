#!/usr/bin/env bash
# Real-world check for a server, kept out of `make test` (it downloads
# Debian's redis source): build Debian's redis 7.0.15 package with the
# CVE-2025-21605 fix reverted, start the server, show the public proof of
# concept working against it (an unauthenticated client makes the server
# queue replies without limit), build the fix with `hotpatch build`, apply
# it to the running server and show the same proof of concept failing
# against the same process (the client is disconnected).
#
# Usage: testdata/build/realworld-server/run.sh [HOTPATCH]   (default bin/hotpatch)
#
# Everything runs on 127.0.0.1; the server is stopped and the temporary
# directory removed at the end. Installs the Debian packages it needs
# (build dependencies of the redis package) when they are missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
hotpatch=${1:-$root/bin/hotpatch}
work=$(mktemp -d)
server_pid=
passed=
cleanup() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
	if [ -z "$passed" ]; then
		echo "realworld-server: 0 passed, 1 failed"
	fi
}
trap cleanup EXIT

fail() {
	echo "realworld-server: FAILED: $*" >&2
	if [ -s "$work/redis.log" ]; then
		echo "--- end of the server's log" >&2
		tail -5 "$work/redis.log" >&2
	fi
	exit 1
}
# timed FILE CMD...: runs CMD, writes "WALL CPU" (seconds; CPU is user +
# system time of CMD and its children) to FILE.
timed() {
	local out=$1 TIMEFORMAT='%R %U %S' t
	shift
	{ t=$( { time "$@" >&3 2>&4; } 2>&1); } 3>&1 4>&2 || return
	echo "$t" | awk '{ printf "%.1f %.1f\n", $1, $2 + $3 }' >"$out"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

if ! "$hotpatch" build --help >/dev/null 2>&1; then
	fail "$hotpatch has no build command"
fi

# What the redis package's build needs (debian/control's Build-Depends that
# the build below uses), dpkg-dev for dpkg-source and dpkg-buildflags, and
# python3 for the proof of concept.
need=(dpkg-dev patch make gcc pkg-config libjemalloc-dev liblzf-dev libssl-dev libsystemd-dev python3)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing ${missing[*]}"
	apt-get -q update >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's source package, through apt with a private source list: the
# machine's apt configuration is not changed. dpkg-source applies Debian's
# patches, among them the CVE-2025-21605 fix, which is then reverted.
mkdir -p "$work/apt/lists/partial"
printf 'deb-src http://deb.debian.org/debian bookworm main\n' >"$work/apt/sources.list"
apt_opts=(-q -o APT::Sandbox::User=root -o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$work/apt/lists")
apt-get "${apt_opts[@]}" update >/dev/null
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only redis >/dev/null 2>&1) ||
	fail "apt-get source redis"
dsc=$(ls "$work"/redis_*.dsc)
[ -f "$work/redis_7.0.15.orig.tar.gz" ] || fail "the source package is not redis 7.0.15: $(basename "$dsc")"
dpkg-source -x "$dsc" "$work/redis" >/dev/null 2>&1 || fail "dpkg-source -x $dsc"
echo "source: $(basename "$dsc" .dsc)"
(cd "$work/redis" && patch -R -p1 -s --no-backup-if-mismatch <"$here/CVE-2025-21605.patch") ||
	fail "the CVE-2025-21605 fix does not revert cleanly"
if grep -q 'used_mem > 1024 && authRequired(c)' "$work/redis/src/networking.c"; then
	fail "the fix is still in src/networking.c"
fi

# The user's build of the vulnerable package, installed as a package would
# be; the source tree is then cleaned as `debian/rules clean` does, and
# hotpatch builds from it later.
plain_build() ( cd "$work/redis" && "$here/debian-build.sh" -j"$(nproc)" >"$work/build.log" 2>&1 )
timed "$work/plain.time" plain_build ||
	{ tail -20 "$work/build.log" >&2; fail "the plain build failed"; }
read -r plain_wall plain_cpu <"$work/plain.time"
echo "plain build (debian-build.sh -j$(nproc)): $plain_wall s, CPU $plain_cpu s"
(cd "$work/redis" && "$here/debian-build.sh" install PREFIX="$work/inst" >/dev/null 2>&1 &&
	make distclean >/dev/null 2>&1) || fail "install or distclean"
server=$work/inst/bin/redis-server
cli=$work/inst/bin/redis-cli

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=hotpatch-$$-$RANDOM
"$server" --bind 127.0.0.1 --port "$port" --requirepass "$password" --save '' --appendonly no \
	--dir "$work" --logfile "$work/redis.log" --daemonize no &
server_pid=$!
rcli() { "$cli" -h 127.0.0.1 -p "$port" -a "$password" --no-auth-warning "$@"; }
for _ in $(seq 50); do
	[ "$(rcli ping 2>/dev/null)" = PONG ] && break
	sleep 0.2
done
[ "$(rcli ping 2>/dev/null)" = PONG ] || fail "the server does not answer"
[ "$(rcli info server | tr -d '\r' | sed -n 's/^process_id://p')" = "$server_pid" ] ||
	fail "the server on port $port is not process $server_pid"
rcli set hotpatch:before-patch kept >/dev/null

before=$(python3 "$here/poc.py" "$port" "$password") || fail "the proof of concept did not run: $before"
echo "before (pid $server_pid): $before"
case $before in
poc=vulnerable*) ;;
*) fail "the proof of concept does not work against the vulnerable server" ;;
esac
omem=$(echo "$before" | sed -n 's/.* omem=\([0-9]*\).*/\1/p')
[ "${omem:-0}" -ge 1048576 ] || fail "the server kept only ${omem:-0} bytes for the unauthenticated client"

timed "$work/hotpatch.time" "$hotpatch" build --src "$work/redis" --diff "$here/CVE-2025-21605.patch" \
	--target "$server" --build "$here/debian-build.sh" -o "$work/redis.hp" || fail "hotpatch build"
read -r hp_wall hp_cpu <"$work/hotpatch.time"
echo "hotpatch build: $hp_wall s, CPU $hp_cpu s: $(ratio "$hp_wall" "$plain_wall") times the plain build's time, $(ratio "$hp_cpu" "$plain_cpu") times its CPU"
"$hotpatch" apply --allow-unsigned --pid "$server_pid" "$work/redis.hp" || fail "hotpatch apply"

[ "$(rcli info server | tr -d '\r' | sed -n 's/^process_id://p')" = "$server_pid" ] ||
	fail "the server is no longer process $server_pid"
after=$(python3 "$here/poc.py" "$port" "$password") || fail "the proof of concept did not run: $after"
echo "after (pid $server_pid): $after"
case $after in
poc=disconnected*) ;;
*) fail "the patched server still queues replies for an unauthenticated client" ;;
esac
grep -q 'scheduled to be closed ASAP for overcoming of output buffer limits' "$work/redis.log" ||
	fail "the server's log does not show the client closed for its output buffer"
echo "server log: $(grep -m1 'scheduled to be closed ASAP' "$work/redis.log" | sed 's/.*\(Client id=[0-9]*\) addr=[^ ]*.*\( omem=[0-9]*\).*\(scheduled.*\)/\1\2 \3/')"

# The same process, with its data, and authenticated clients still get
# large replies.
[ "$(rcli get hotpatch:before-patch)" = kept ] || fail "the key set before the patch is gone"
head -c 100000 /dev/zero | tr '\0' a | rcli -x set hotpatch:big >/dev/null
[ "$(rcli get hotpatch:big | tr -d '\n' | wc -c)" -eq 100000 ] || fail "a 100000-byte reply to an authenticated client"
kill "$server_pid"
wait "$server_pid" || true
server_pid=
passed=1
echo "realworld-server: 1 passed, 0 failed"
