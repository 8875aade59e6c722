#!/usr/bin/env python3
"""Drives mutt (which needs a terminal) in a pseudo-terminal: opens a POP3 mailbox, copies the
first message to an mbox file, leaves without changing anything.

    mutt_pop3.py MUTTRC URL OUT
"""
import os
import pty
import select
import sys
import time

muttrc, url, out = sys.argv[1], sys.argv[2], sys.argv[3]
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execvp("mutt", ["mutt", "-n", "-F", muttrc, "-f", url])

seen = b""


def wait_for(needle, limit=30):
    global seen
    end = time.time() + limit
    while needle not in seen:
        if time.time() > end:
            raise SystemExit(f"mutt did not show {needle!r}: {seen[-2000:]!r}")
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                raise SystemExit(f"mutt ended: {seen[-2000:]!r}")


wait_for(b"Msgs:")
os.write(fd, b"C")
wait_for(b"Copy to")
os.write(fd, out.encode() + b"\r")
time.sleep(1)
os.write(fd, b"x")
end = time.time() + 20
while time.time() < end:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(0 if os.path.exists(out) else 1)
    r, _, _ = select.select([fd], [], [], 0.5)
    if r:
        try:
            seen += os.read(fd, 65536)
        except OSError:
            pass
os.kill(pid, 9)
raise SystemExit(f"mutt did not exit: {seen[-2000:]!r}")
