#!/usr/bin/env python3
"""SMTP edge cases that need byte-level control over TLS, run against envelopd by provider_e2e.rs.

    smtp_tls_edges.py loopback HOST PORT CAFILE USER PASSWORD
    smtp_tls_edges.py lan      HOST PORT CAFILE USER PASSWORD

Prints one line per check and exits 1 on the first failure.
"""
import base64
import socket
import ssl
import sys


def reply(f):
    text = ""
    while True:
        line = f.readline().decode("utf-8", "replace")
        text += line
        if len(line) < 4 or line[3] != "-":
            return text


def check(cond, what, got=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f": {got!r}"))
    if not cond:
        sys.exit(1)


def connect(host, port):
    s = socket.create_connection((host, port), timeout=20)
    f = s.makefile("rb")
    check(reply(f).startswith("220"), "greeting")
    return s, f


def cmd(s, f, line):
    s.sendall(line)
    return reply(f)


def tls(s, ctx):
    t = ctx.wrap_socket(s, server_hostname="localhost")
    return t, t.makefile("rb")


def plain_auth(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def loopback(host, port, ctx, user, password):
    s, f = connect(host, port)
    r = cmd(s, f, b"EHLO c.example\r\n")
    check("STARTTLS" in r, "STARTTLS offered before TLS", r)
    # CVE-2011-0411: a command sent in the same packet as STARTTLS must not be run after TLS.
    r = cmd(s, f, b"STARTTLS\r\nNOOP injected\r\n")
    check(r.startswith("220"), "STARTTLS accepted", r)
    t, tf = tls(s, ctx)
    r = cmd(t, tf, b"EHLO c.example\r\n")
    check(r.startswith("250-"), "first reply over TLS belongs to EHLO, not to the injected NOOP", r)
    check("STARTTLS" not in r, "STARTTLS no longer offered", r)
    check("AUTH PLAIN LOGIN" in r, "AUTH offered over TLS", r)
    r = cmd(t, tf, b"STARTTLS\r\n")
    check(r.startswith("454") or r.startswith("503"), "a second STARTTLS is refused", r)
    r = cmd(t, tf, b"AUTH PLAIN " + plain_auth(user, password).encode() + b"\r\n")
    check(r.startswith("235"), "AUTH PLAIN relayed to the provider", r)
    r = cmd(t, tf, b"AUTH PLAIN " + plain_auth(user, password).encode() + b"\r\n")
    check(r.startswith("503"), "a second AUTH is refused", r)
    check(cmd(t, tf, b"QUIT\r\n").startswith("221"), "QUIT")
    t.close()

    # Garbage instead of a TLS handshake: the session ends, envelopd keeps serving.
    s, f = connect(host, port)
    cmd(s, f, b"EHLO c.example\r\n")
    check(cmd(s, f, b"STARTTLS\r\n").startswith("220"), "STARTTLS accepted")
    s.sendall(b"this is not a TLS ClientHello\r\n" * 4)
    s.settimeout(20)
    rest = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
    except (ConnectionResetError, socket.timeout) as e:
        check(not isinstance(e, socket.timeout), "connection closed after a failed handshake", e)
    check(b"250" not in rest, "nothing answered in the clear after STARTTLS", rest)
    s.close()
    s, f = connect(host, port)
    check(cmd(s, f, b"NOOP\r\n").startswith("250"), "a new session works after the garbage")
    s.close()


def lan(host, port, ctx, user, password):
    s, f = connect(host, port)
    r = cmd(s, f, b"EHLO c.example\r\n")
    check("STARTTLS" in r and "AUTH" not in r, "off loopback: STARTTLS offered, AUTH not before TLS", r)
    r = cmd(s, f, b"AUTH PLAIN " + plain_auth(user, password).encode() + b"\r\n")
    check(r.startswith("538 5.7.11"), "AUTH in the clear refused", r)
    r = cmd(s, f, b"MAIL FROM:<" + user.encode() + b">\r\n")
    check(r.startswith("530 5.7.0"), "MAIL without login refused", r)
    check(cmd(s, f, b"STARTTLS\r\n").startswith("220"), "STARTTLS accepted")
    t, tf = tls(s, ctx)
    r = cmd(t, tf, b"EHLO c.example\r\n")
    check("AUTH PLAIN LOGIN" in r, "AUTH offered over TLS", r)
    r = cmd(t, tf, b"MAIL FROM:<" + user.encode() + b">\r\n")
    check(r.startswith("530 5.7.0"), "MAIL before AUTH still refused over TLS", r)
    r = cmd(t, tf, b"AUTH PLAIN " + plain_auth(user, "wrong") .encode() + b"\r\n")
    check(r.startswith("535"), "a wrong password is the provider's 535", r)
    r = cmd(t, tf, b"AUTH LOGIN\r\n")
    check(r.startswith("334"), "AUTH LOGIN asks for the user", r)
    r = cmd(t, tf, base64.b64encode(user.encode()) + b"\r\n")
    check(r.startswith("334"), "AUTH LOGIN asks for the password", r)
    r = cmd(t, tf, base64.b64encode(password.encode()) + b"\r\n")
    check(r.startswith("235"), "AUTH LOGIN relayed and accepted", r)
    check(cmd(t, tf, b"MAIL FROM:<" + user.encode() + b">\r\n").startswith("250"), "MAIL after login")
    check(cmd(t, tf, b"RCPT TO:<bob@smime.example>\r\n").startswith("250"), "RCPT")
    check(cmd(t, tf, b"DATA\r\n").startswith("354"), "DATA")
    msg = (b"From: Alice <" + user.encode() + b">\r\nTo: bob@smime.example\r\n"
           b"Subject: over the LAN\r\n\r\nsent from another machine\r\n.\r\n")
    r = cmd(t, tf, msg)
    check(r.startswith("250"), "the provider's 250 for the message", r)
    check(cmd(t, tf, b"QUIT\r\n").startswith("221"), "QUIT")


def main():
    mode, host, port, cafile, user, password = sys.argv[1:7]
    ctx = ssl.create_default_context(cafile=cafile)
    {"loopback": loopback, "lan": lan}[mode](host, int(port), ctx, user, password)


main()
