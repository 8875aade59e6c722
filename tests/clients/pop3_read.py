#!/usr/bin/env python3
"""Reads a mailbox through envelopd's POP3 side with Python's poplib and prints it as JSON.

    pop3_read.py PORT USER PASSWORD [auth]

Logs in with USER/PASS (or AUTH PLAIN with "auth"), then STAT, LIST, UIDL, and for every
message LIST n, RETR n (its lines joined with CRLF, and the octet count poplib counted), TOP n 0
and TOP n 2. Bytes are base64 in the JSON. Leaves the mailbox as it was (QUIT without DELE).
"""
import base64
import json
import poplib
import sys


def b64(data):
    return base64.b64encode(data).decode()


def main():
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    out = {"greeting": p.getwelcome().decode(), "capa": {k: v for k, v in p.capa().items()}}
    if len(sys.argv) > 4 and sys.argv[4] == "auth":
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        out["auth"] = p._shortcmd("AUTH PLAIN " + token).decode()
    else:
        p.user(user)
        p.pass_(password)
    count, total = p.stat()
    out["stat"] = [count, total]
    resp, lines, _ = p.list()
    out["list"] = {l.split()[0].decode(): int(l.split()[1]) for l in lines}
    resp, lines, _ = p.uidl()
    out["uidl"] = {l.split()[0].decode(): l.split()[1].decode() for l in lines}
    messages = {}
    for n in sorted(out["list"], key=int):
        one = p.list(n).split()
        resp, lines, octets = p.retr(n)
        body = b"".join(l + b"\r\n" for l in lines)
        _, top0, _ = p.top(n, 0)
        _, top2, _ = p.top(n, 2)
        messages[n] = {
            "list_one": int(one[2]),
            "retr_status": resp.decode(),
            "retr": b64(body),
            "octets": octets,
            "top0": b64(b"".join(l + b"\r\n" for l in top0)),
            "top2": b64(b"".join(l + b"\r\n" for l in top2)),
        }
    out["messages"] = messages
    p.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
