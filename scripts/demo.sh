#!/usr/bin/env bash
# Patch a running program and watch its output change, then revert it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${HOTPATCH:-$PWD/bin/hotpatch}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/server.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* A "vulnerable" length check: it accepts a 16-byte name into a 16-byte buffer. */
__attribute__((noipa)) int name_ok(const char *name) { return strlen(name) <= 16; }
__attribute__((noipa)) int padding_after(void) { return 0; }
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0;; i++) {
		printf("request %d: 16-byte name %s\n", i, name_ok("AAAAAAAAAAAAAAAA") ? "ACCEPTED (overflow!)" : "rejected");
		usleep(200000);
	}
}
C
cat > "$work/fix.c" <<'C'
#include <string.h>
int name_ok_fixed(const char *name) { return strlen(name) < 16; }
C
gcc -O2 -o "$work/server" "$work/server.c"
gcc -O2 -fPIC -c -o "$work/fix.o" "$work/fix.c"

echo "== starting the server"
"$work/server" > "$work/log" &
pid=$!
sleep 0.7
tail -n 2 "$work/log"
echo "== hotpatch pack, then sign with a fresh key that this host trusts"
"$bin" pack --target "$work/server" --replace name_ok=name_ok_fixed --id demo-fix -o "$work/fix.hp" "$work/fix.o"
"$bin" key generate -o "$work/demo" >/dev/null
"$bin" sign --key "$work/demo.key" "$work/fix.hp"
echo "== hotpatch apply (no restart)"
"$bin" apply --pid "$pid" --trust "$work/demo.pub" "$work/fix.hp"
sleep 0.5
tail -n 2 "$work/log"
echo "== hotpatch status"
"$bin" status --pid "$pid"
echo "== hotpatch revert"
"$bin" revert --pid "$pid" demo-fix
sleep 0.5
tail -n 1 "$work/log"
echo "== same process throughout: pid $pid"
