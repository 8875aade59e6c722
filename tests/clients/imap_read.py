#!/usr/bin/env python3
"""Reads a mailbox through envelopd with Python's imaplib and prints what it saw as JSON.

    imap_read.py PROXY_PORT USER PASSWORD DOVECOT_IMAPS_PORT CAFILE

For every message: the UID and, each fetched on its own, RFC822.SIZE, BODY[] (also through
FETCH RFC822 by sequence number), BODY[HEADER], BODY[TEXT], BODY[1], BODY[]<7.40>, BODYSTRUCTURE
and BODY. Each shown message is then APPENDed straight to Dovecot (folder "Shown") and
Dovecot's own BODYSTRUCTURE of those bytes is added, so the test can compare envelopd's with a
real server's. Bytes are base64 in the JSON.
"""
import base64
import imaplib
import json
import re
import ssl
import sys


def b64(data):
    return base64.b64encode(data).decode()


def literal(resp):
    """The literal of a one-item FETCH response."""
    for part in resp:
        if isinstance(part, tuple):
            return part[1]
    raise SystemExit(f"no literal in {resp!r}")


def text(resp):
    """A FETCH response's text with literals inlined (for structures)."""
    out = b""
    for part in resp:
        if isinstance(part, tuple):
            out += part[0] + b'"' + part[1] + b'"'
        elif part is not None:
            out += part
    return out.decode("utf-8", "replace")


def item_value(resp, name):
    t = text(resp)
    i = t.find(name + " ")
    if i < 0:
        raise SystemExit(f"{name} missing in {t!r}")
    rest = t[i + len(name) + 1:]
    if rest.startswith("("):
        depth = 0
        for j, c in enumerate(rest):
            depth += c == "("
            depth -= c == ")"
            if depth == 0:
                return rest[: j + 1]
    return re.match(r"[^ )]+", rest).group(0)


def main():
    port, user, password, dovecot_port, cafile = sys.argv[1:6]
    m = imaplib.IMAP4("127.0.0.1", int(port))
    caps = m.capabilities
    m.login(user, password)
    typ, _ = m.select("INBOX")
    assert typ == "OK"
    typ, data = m.uid("SEARCH", None, "ALL")
    uids = [int(u) for u in data[0].split()]
    out = {"capabilities": [c if isinstance(c, str) else c.decode() for c in caps], "messages": []}
    for seq, uid in enumerate(uids, start=1):
        one = lambda item: m.uid("FETCH", str(uid), f"({item})")[1]
        msg = {"uid": uid}
        msg["size"] = int(item_value(one("RFC822.SIZE"), "RFC822.SIZE"))
        msg["body"] = b64(literal(one("BODY.PEEK[]")))
        msg["rfc822"] = b64(literal(m.fetch(str(seq), "(RFC822)")[1]))
        msg["header"] = b64(literal(one("BODY.PEEK[HEADER]")))
        msg["text"] = b64(literal(one("BODY.PEEK[TEXT]")))
        msg["part1"] = b64(literal(one("BODY.PEEK[1]")))
        msg["partial"] = b64(literal(one("BODY.PEEK[]<7.40>")))
        msg["bodystructure"] = item_value(one("BODYSTRUCTURE"), "BODYSTRUCTURE")
        msg["body_short"] = item_value(one("BODY"), "BODY")
        typ, flags = m.uid("FETCH", str(uid), "(FLAGS)")
        msg["flags"] = text(flags)
        out["messages"].append(msg)
    # SEARCH over encrypted mail: UIDs for each query, and sequence numbers for one.
    searches = {}
    for q in ["BODY unauffaellig", "TEXT UNAUFFAELLIG", "NOT BODY unauffaellig",
              "OR BODY unauffaellig SUBJECT plain", "BODY unauffaellig SUBJECT openssl-gcm"]:
        typ, data = m.uid("SEARCH", None, q)
        assert typ == "OK", (q, data)
        searches[q] = [int(u) for u in data[0].split()]
    typ, data = m.search(None, "BODY", "unauffaellig")
    searches["seq: BODY unauffaellig"] = [int(u) for u in data[0].split()]
    typ, data = m.uid("FETCH", "1:*", "(UID)")
    out["uid_by_seq"] = [int(re.search(rb"UID (\d+)", d).group(1)) for d in data if d]
    out["searches"] = searches
    m.logout()

    # The same bytes stored at Dovecot directly: its BODYSTRUCTURE is the reference.
    ctx = ssl.create_default_context(cafile=cafile)
    d = imaplib.IMAP4_SSL("localhost", int(dovecot_port), ssl_context=ctx)
    d.login(user, password)
    d.create("Shown")
    for msg in out["messages"]:
        typ, data = d.append("Shown", None, None, base64.b64decode(msg["body"]))
        assert typ == "OK", data
    d.select("Shown")
    typ, data = d.uid("SEARCH", None, "ALL")
    shown_uids = [int(u) for u in data[0].split()]
    for msg, uid in zip(out["messages"], shown_uids):
        resp = d.uid("FETCH", str(uid), "(BODYSTRUCTURE)")[1]
        msg["dovecot_bodystructure"] = item_value(resp, "BODYSTRUCTURE")
        resp = d.uid("FETCH", str(uid), "(RFC822.SIZE)")[1]
        msg["dovecot_size"] = int(item_value(resp, "RFC822.SIZE"))
    d.delete("Shown")
    d.logout()
    print(json.dumps(out))


main()
