#!/usr/bin/env python3
"""Runs a list of IMAP steps through envelopd with Python's imaplib, prints the results as JSON.

    imap_steps.py PORT STEPS_JSON

Steps (a JSON list, each a list):
  ["login", user, password]            LOGIN with quoted strings
  ["login-literal", user, password]    LOGIN with the user name sent as a literal
  ["select", mailbox]                  SELECT (quoted)
  ["select-literal", mailbox]          SELECT with the name as a literal
  ["fetch-all"]                        every message: UID, BODY.PEEK[] (base64), and the status
  ["search", text]                     UID SEARCH TEXT "text" -> the UIDs
  ["create", mailbox]                  CREATE (quoted)
  ["append", mailbox, flags, message]  APPEND (quoted name, flags such as "(\\Draft)", a literal)
  ["append-literal", mailbox, flags, message]  the same with the mailbox name as a literal too
Everything runs in one session; the output has one entry per step.
"""
import base64
import imaplib
import json
import sys


def main():
    port = int(sys.argv[1])
    steps = json.loads(sys.argv[2])
    m = imaplib.IMAP4("127.0.0.1", port)
    out = []
    for step in steps:
        kind = step[0]
        if kind == "login":
            # imaplib quotes only the password; a user name with a space must be quoted too.
            typ, _ = m.login(m._quote(step[1]), step[2])
            out.append(typ)
        elif kind == "login-literal":
            # imaplib sends its `literal` as the command's last argument: the password goes in
            # the line, quoted, the user name as a literal before it is not possible, so send
            # the whole command by hand: LOGIN {n}\r\nuser "password".
            tag = m._new_tag()
            user = step[1].encode()
            m.send(tag + b" LOGIN {%d}\r\n" % len(user))
            cont = m.readline()
            if not cont.startswith(b"+"):
                raise SystemExit(f"no continuation: {cont!r}")
            m.send(user + b' "' + step[2].encode() + b'"\r\n')
            while True:
                line = m.readline()
                if line.startswith(tag):
                    break
            ok = line.split()[1].decode()
            if ok == "OK":
                m.state = "AUTH"
            out.append(ok)
        elif kind == "select":
            typ, data = m.select('"%s"' % step[1])
            out.append([typ, data[0].decode() if data and data[0] else ""])
        elif kind == "select-literal":
            m.literal = step[1].encode()
            typ, data = m._simple_command("SELECT")
            if typ == "OK":
                m.state = "SELECTED"
            out.append([typ, ""])
        elif kind == "fetch-all":
            typ, data = m.uid("SEARCH", None, "ALL")
            msgs = []
            for uid in data[0].split():
                typ, resp = m.uid("FETCH", uid, "(BODY.PEEK[])")
                body = next(p[1] for p in resp if isinstance(p, tuple))
                status = ""
                for line in body.split(b"\r\n"):
                    if line.lower().startswith(b"x-envelopd:"):
                        status = line.split(b":", 1)[1].strip().decode()
                        break
                    if not line:
                        break
                msgs.append({"uid": int(uid), "status": status,
                             "body": base64.b64encode(body).decode()})
            out.append(msgs)
        elif kind == "create":
            typ, data = m.create('"%s"' % step[1])
            out.append(typ)
        elif kind == "append":
            typ, data = m.append('"%s"' % step[1], step[2] or None, None, step[3].encode())
            out.append(typ)
        elif kind == "append-literal":
            # imaplib quotes names; some programs send them as literals: APPEND {n} CRLF name
            # flags {m} CRLF message.
            tag = m._new_tag()
            name, message = step[1].encode(), step[3].encode()
            m.send(tag + b" APPEND {%d}\r\n" % len(name))
            cont = m.readline()
            if not cont.startswith(b"+"):
                raise SystemExit(f"no continuation for the name: {cont!r}")
            m.send(name + b" " + step[2].encode() + b" {%d}\r\n" % len(message))
            cont = m.readline()
            if not cont.startswith(b"+"):
                raise SystemExit(f"no continuation for the message: {cont!r}")
            m.send(message + b"\r\n")
            while True:
                line = m.readline()
                if line.startswith(tag):
                    break
            out.append(line.split()[1].decode())
        elif kind == "search":
            typ, data = m.uid("SEARCH", None, "TEXT", '"%s"' % step[1])
            out.append([int(u) for u in data[0].split()])
        else:
            raise SystemExit(f"unknown step {kind}")
    m.logout()
    print(json.dumps(out))


main()
