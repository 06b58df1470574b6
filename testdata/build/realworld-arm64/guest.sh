#!/bin/sh
# Inside the arm64 VM (busybox sh), run by run.sh: start the proof of
# concept against the vulnerable libz, apply the patch built on the host to
# the running process, check it survives, revert, check it crashes again.
# Every line meant for the host starts with "realworld-arm64:".
#
# Usage: sh guest.sh PATCH_ID    (files in /test, see run.sh)
id=$1
hp=/test/zlib-arm64.hp
out=/tmp/poc.out
pid=
say() { echo "realworld-arm64: $*"; }
fail() {
	say "FAIL: $*"
	if [ -s "$out" ]; then
		echo "--- end of the proof of concept's output"
		tail -n 5 "$out"
	fi
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	exit 1
}
lines() { wc -l <"$out" | tr -d ' '; }
# wait_lines N: wait (at most 60 s) until the output has N lines.
wait_lines() {
	n=0
	while [ "$(lines)" -lt "$1" ]; do
		n=$((n + 1))
		[ $n -gt 120 ] && fail "the proof of concept printed $(lines) lines in 60 s, expected $1"
		kill -0 "$pid" 2>/dev/null || fail "the proof of concept (pid $pid) died"
		sleep 0.5
	done
}
# rounds FROM: the rounds printed from line FROM on.
rounds() { tail -n +"$1" "$out" | grep '^poc='; }

cd /test
./poc >"$out" 2>&1 &
pid=$!
# Line 1 is the version, then one line per round.
wait_lines 4
grep -q /test/zlib/libz.so.1.2.13 "/proc/$pid/maps" || fail "pid $pid does not map /test/zlib/libz.so.1.2.13"
say "$(head -n 1 "$out") from /test/zlib/libz.so.1.2.13, pid $pid"
before=$(rounds 2)
if echo "$before" | grep -q 'poc=survived' || ! echo "$before" | grep -q 'poc=crashed'; then
	fail "the proof of concept does not crash the vulnerable zlib: $(echo "$before" | tail -n 1)"
fi
say "before: $(echo "$before" | wc -l) rounds, all crashed ($(echo "$before" | tail -n 1))"

apply=$(hotpatch apply --pid "$pid" --trust /test/realworld.pub "$hp" 2>&1) || fail "hotpatch apply: $apply"
echo "$apply" | sed 's/^/  /'
say "apply (emulated): $(echo "$apply" | sed -n 's/.*\(paused [^,]*\), .*\(total .*\)/\1, \2/p')"
# The round running during the apply may have started in the old code.
mark=$(lines)
wait_lines $((mark + 4))
after=$(rounds $((mark + 2)))
if echo "$after" | grep -q 'poc=crashed' || ! echo "$after" | grep -q 'poc=survived'; then
	fail "the patched process still crashes: $(echo "$after" | tr '\n' ' ')"
fi
say "after apply: $(echo "$after" | wc -l) rounds, all survived ($(echo "$after" | tail -n 1))"

status=$(hotpatch status --pid "$pid" 2>&1) || fail "hotpatch status: $status"
echo "$status" | sed 's/^/  /'
echo "$status" | grep "$id" | grep -q inflate || fail "hotpatch status does not list $id replacing inflate"
say "status lists $id (inflate)"

revert=$(hotpatch revert --pid "$pid" "$id" 2>&1) || fail "hotpatch revert: $revert"
echo "$revert" | sed 's/^/  /'
mark=$(lines)
wait_lines $((mark + 4))
again=$(rounds $((mark + 2)))
if echo "$again" | grep -q 'poc=survived' || ! echo "$again" | grep -q 'poc=crashed'; then
	fail "the reverted process does not crash again: $(echo "$again" | tr '\n' ' ')"
fi
say "after revert: $(echo "$again" | wc -l) rounds, all crashed ($(echo "$again" | tail -n 1))"
[ "$(hotpatch status --pid "$pid" 2>&1)" = "pid $pid: no patches" ] || fail "hotpatch status still lists patches after the revert"
kill "$pid"
say "PASS (same process $pid throughout)"
