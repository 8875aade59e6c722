#!/usr/bin/env python3
"""Reads every message's header through envelopd in each FETCH form, with Python's imaplib, and
searches by subject; prints JSON.

    imap_headers.py PROXY_PORT USER PASSWORD SUBJECT_WORD

Per message (UID order): ENVELOPE, BODY.PEEK[HEADER.FIELDS (SUBJECT)], BODY.PEEK[HEADER],
RFC822.HEADER, BODY.PEEK[] and BODY.PEEK[TEXT] (bytes as base64), RFC822.SIZE and BODYSTRUCTURE;
then UID SEARCH SUBJECT word and UID SEARCH HEADER Subject word.
"""
import base64
import imaplib
import json
import re
import sys


def b64(data):
    return base64.b64encode(data).decode()


def literal(resp):
    for part in resp:
        if isinstance(part, tuple):
            return part[1]
    raise SystemExit(f"no literal in {resp!r}")


def flat(resp):
    out = b""
    for part in resp:
        if isinstance(part, tuple):
            out += part[0] + b"{" + str(len(part[1])).encode() + b"}\r\n" + part[1]
        elif part is not None:
            out += part
    return out.decode("utf-8", "replace")


def main():
    port, user, password, word = sys.argv[1:5]
    m = imaplib.IMAP4("127.0.0.1", int(port))
    m.login(user, password)
    typ, _ = m.select("INBOX")
    assert typ == "OK"
    typ, data = m.uid("SEARCH", None, "ALL")
    uids = [int(u) for u in data[0].split()]
    out = {"messages": []}
    for uid in uids:
        one = lambda item: m.uid("FETCH", str(uid), f"({item})")[1]
        msg = {"uid": uid}
        msg["envelope"] = flat(one("ENVELOPE"))
        msg["subject_field"] = b64(literal(one("BODY.PEEK[HEADER.FIELDS (SUBJECT)]")))
        msg["header"] = b64(literal(one("BODY.PEEK[HEADER]")))
        msg["rfc822_header"] = b64(literal(one("RFC822.HEADER")))
        msg["body"] = b64(literal(one("BODY.PEEK[]")))
        msg["text"] = b64(literal(one("BODY.PEEK[TEXT]")))
        size = re.search(r"RFC822\.SIZE (\d+)", flat(one("RFC822.SIZE")))
        msg["size"] = int(size.group(1))
        msg["bodystructure"] = flat(one("BODYSTRUCTURE"))
        out["messages"].append(msg)
    for key, query in [("search_subject", f"SUBJECT {word}"),
                       ("search_header", f"HEADER Subject {word}")]:
        typ, data = m.uid("SEARCH", None, query)
        assert typ == "OK", (query, data)
        out[key] = [int(u) for u in data[0].split()]
    m.logout()
    print(json.dumps(out))


main()
