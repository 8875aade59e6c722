#!/usr/bin/env python3
"""APPEND and IDLE through envelopd (run by imap_e2e.rs).

    imap_append_idle.py PORT USER PASSWORD

Appends a plaintext message to Sent and one to INBOX, reads the Sent copy back, then IDLEs on
INBOX: prints "IDLING" when the server has accepted IDLE (the test then delivers a message) and
"EXISTS n" when the new message is announced. Prints JSON lines; exits 1 on any failure.
"""
import base64
import imaplib
import json
import socket
import sys
import time

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
SENT = b"From: bob@smime.example\r\nTo: alice@smime.example\r\nBcc: carol@smime.example\r\nSubject: sent copy\r\n\r\nSent copy secret 42\r\n"
PLAIN = b"From: bob@smime.example\r\nTo: bob@smime.example\r\nSubject: inbox copy\r\n\r\nInbox plain 43\r\n"

m = imaplib.IMAP4("127.0.0.1", port)
m.login(user, password)
m.create("Sent")
typ, data = m.append("Sent", "(\\Seen)", None, SENT)
assert typ == "OK", data
typ, data = m.append("INBOX", None, None, PLAIN)
assert typ == "OK", data
m.select("Sent")
typ, data = m.fetch("1", "(BODY.PEEK[] RFC822.SIZE)")
body = [p for p in data if isinstance(p, tuple)][0][1]
print(json.dumps({"sent_read_back": base64.b64encode(body).decode()}), flush=True)
m.logout()

# IDLE, raw: imaplib of this Python has no IDLE.
s = socket.create_connection(("127.0.0.1", port), timeout=60)
f = s.makefile("rb")
f.readline()
def cmd(line):
    s.sendall(line)
    while True:
        r = f.readline()
        if not r.startswith(b"* ") or r.startswith(b"* BYE"):
            return r
# AUTHENTICATE PLAIN without an initial response: the credentials follow on their own line.
s.sendall(b"l AUTHENTICATE PLAIN\r\n")
r = f.readline()
assert r.startswith(b"+"), r
s.sendall(base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()) + b"\r\n")
while True:
    r = f.readline()
    if r.startswith(b"l "):
        assert r.startswith(b"l OK"), r
        break
s.sendall(b"s SELECT INBOX\r\n")
while True:
    r = f.readline()
    if r.startswith(b"s "):
        assert r.startswith(b"s OK"), r
        break
s.sendall(b"i IDLE\r\n")
r = f.readline()
assert r.startswith(b"+"), r
print(json.dumps({"idling": True}), flush=True)
deadline = time.time() + 60
exists = None
while time.time() < deadline:
    r = f.readline()
    if r.endswith(b"EXISTS\r\n"):
        exists = int(r.split()[1])
        break
s.sendall(b"DONE\r\n")
while True:
    r = f.readline()
    if r.startswith(b"i "):
        assert r.startswith(b"i OK"), r
        break
# After AUTHENTICATE and IDLE, a FETCH that makes envelopd fetch and decrypt on its own must
# still be answered at once (neither line may count as a command still waiting for its answer).
s.sendall(b"j FETCH %d (BODY.PEEK[TEXT])\r\n" % (exists or 1))
text = b""
while True:
    r = f.readline()
    text += r
    if r.startswith(b"j "):
        assert r.startswith(b"j OK"), r
        break
print(json.dumps({"exists": exists, "after_idle": text.decode("utf-8", "replace")}), flush=True)
