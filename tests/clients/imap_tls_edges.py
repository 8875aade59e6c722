#!/usr/bin/env python3
"""IMAP STARTTLS from the LAN through envelopd (run by imap_e2e.rs).

    imap_tls_edges.py HOST PORT CAFILE USER PASSWORD

Off loopback: LOGINDISABLED and no LOGIN before TLS; STARTTLS with a command injected in the
same packet (CVE-2011-0411 style) must not run it; after TLS the login works and mail is read.
"""
import socket
import ssl
import sys

host, port, cafile, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def check(cond, what, got=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f": {got!r}"))
    if not cond:
        sys.exit(1)


def until_tagged(f, tag):
    out = b""
    while True:
        line = f.readline()
        out += line
        if not line or line.startswith(tag + b" "):
            return out.decode("utf-8", "replace")


s = socket.create_connection((host, port), timeout=20)
f = s.makefile("rb")
g = f.readline().decode()
check("STARTTLS" in g and "LOGINDISABLED" in g, "greeting offers STARTTLS, says LOGINDISABLED", g)
s.sendall(b"a LOGIN " + user.encode() + b" " + password.encode() + b"\r\n")
r = until_tagged(f, b"a")
check("a NO [PRIVACYREQUIRED]" in r, "LOGIN in the clear refused", r)
# The same with the name as a literal: refused before the "+", the password is never asked for.
s.sendall(b"l1 LOGIN {%d}\r\n" % len(user))
r = f.readline().decode()
check(r.startswith("l1 NO [PRIVACYREQUIRED]"), "literal LOGIN in the clear refused before +", r)
# LITERAL+: name and password arrive unasked; both are dropped, the session goes on.
s.sendall(b"l2 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\nl3 NOOP\r\n"
          % (len(user), user.encode(), len(password), password.encode()))
r = until_tagged(f, b"l3")
check("l2 NO [PRIVACYREQUIRED]" in r and "l3 OK" in r and "BAD" not in r,
      "LITERAL+ LOGIN in the clear refused, its data dropped", r)
s.sendall(b"b STARTTLS\r\nc CAPABILITY\r\n")
r = until_tagged(f, b"b")
check("b OK" in r, "STARTTLS accepted", r)
t = ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname="localhost")
tf = t.makefile("rb")
t.sendall(b"d CAPABILITY\r\n")
first = tf.readline().decode()
check(first.startswith("* CAPABILITY"), "the first answer over TLS is for d, not the injected c", first)
check("STARTTLS" not in first and "LOGINDISABLED" not in first, "no STARTTLS/LOGINDISABLED after TLS", first)
rest = until_tagged(tf, b"d")
check("d OK" in rest and "c OK" not in rest, "the injected command never ran", rest)
t.sendall(b"e LOGIN " + user.encode() + b" " + password.encode() + b"\r\n")
check("e OK" in until_tagged(tf, b"e"), "LOGIN over TLS")
t.sendall(b"f SELECT INBOX\r\n")
check("f OK" in until_tagged(tf, b"f"), "SELECT")
t.sendall(b"g FETCH 1 (BODY.PEEK[TEXT])\r\n")
r = until_tagged(tf, b"g")
check("unauffaellig" in r and "g OK" in r, "the message reads decrypted over the LAN", r)
t.sendall(b"h LOGOUT\r\n")
until_tagged(tf, b"h")
